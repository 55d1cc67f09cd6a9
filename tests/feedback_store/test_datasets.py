"""The read API trainers use: every source of pairs, the conversational context, weights, filters."""

import pytest

from feedback_store import datasets
from feedback_store.store import StoreError

CONTEXT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
]


def by_source(pairs):
    out = {}
    for p in pairs:
        out.setdefault(p.source, []).append(p)
    return out


def test_ab_vote_gives_one_pair_with_context_and_versions(tree):
    s, r = tree.store, tree.replies
    c = s.feedback.record_comparison(r[0], r[1], "alice", "b", mode="versions")
    [pair] = datasets.preference_pairs(s)
    assert pair.prompt == CONTEXT  # system prompt first, the retry sibling r1b never leaks in
    assert (pair.chosen, pair.rejected) == ("It is Paris, the capital.", "Paris.")
    assert (pair.chosen_version_id, pair.rejected_version_id) == (tree.v2, tree.v1)
    assert (pair.chosen_message_id, pair.rejected_message_id) == (r[1], r[0])
    assert pair.source == "comparison" and pair.comparison_id == c.id and pair.weight == 1.0
    assert pair.user_id == "alice" and pair.created_at == c.created_at
    assert pair.to_trl() == {
        "prompt": CONTEXT,
        "chosen": [{"role": "assistant", "content": "It is Paris, the capital."}],
        "rejected": [{"role": "assistant", "content": "Paris."}],
    }


def test_ties_and_both_bad_give_no_pairs(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_comparison(r[0], r[1], "alice", "tie", mode="samples")
    s.feedback.record_comparison(r[0], r[2], "alice", "both_bad", mode="samples")
    assert datasets.preference_pairs(s) == []


def test_ranking_expands_into_all_ordered_pairs_with_weight(tree):
    s, r = tree.store, tree.replies
    ranking = s.feedback.record_ranking([r[1], r[0], r[4], r[2]], "alice")
    pairs = datasets.preference_pairs(s, sources=["ranking"])
    assert len(pairs) == 6
    text = {m: s.get_message(m).content for m in r}
    expected = [
        (text[a], text[b])
        for a, b in [(r[1], r[0]), (r[1], r[4]), (r[1], r[2]), (r[0], r[4]), (r[0], r[2]), (r[4], r[2])]
    ]
    assert [(p.chosen, p.rejected) for p in pairs] == expected
    assert all(p.weight == pytest.approx(1 / 6) and p.ranking_id == ranking.id for p in pairs)
    assert all(p.prompt == CONTEXT for p in pairs)
    assert sum(p.weight for p in pairs) == pytest.approx(1.0)


def test_better_answer_is_a_pair_and_a_demonstration(tree):
    s, r = tree.store, tree.replies
    d = s.feedback.add_demonstration(r[2], "bob", "Paris is the capital of France.")
    [pair] = datasets.preference_pairs(s)
    assert pair.source == "better_answer" and pair.demonstration_id == d.id
    assert (pair.chosen, pair.rejected) == ("Paris is the capital of France.", "Lyon.")
    assert pair.chosen_version_id is None and pair.rejected_version_id == tree.v1
    assert pair.chosen_message_id is None and pair.rejected_message_id == r[2]
    [demo] = datasets.demonstrations(s)
    assert demo.prompt == CONTEXT and demo.completion == d.content and demo.replaced == "Lyon."
    assert demo.to_trl() == {"prompt": CONTEXT, "completion": [{"role": "assistant", "content": d.content}]}


def test_unpaired_feedback_from_thumbs(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_feedback(r[0], "alice", thumbs=1, reasons=["accurate"], score=6)
    s.feedback.record_feedback(r[2], "alice", thumbs=-1, reasons=["incorrect"])
    s.feedback.record_feedback(r[3], "alice", score=4)  # a neutral score alone is no label
    got = datasets.unpaired_feedback(s)
    assert [(e.completion, e.label) for e in got] == [("Paris.", True), ("Lyon.", False)]
    assert got[0].reasons == ("accurate",) and got[0].score == 6 and got[0].version_id == tree.v1
    assert got[1].to_trl() == {
        "prompt": CONTEXT,
        "completion": [{"role": "assistant", "content": "Lyon."}],
        "label": False,
    }


def test_filters_by_version_user_source_and_since(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_comparison(r[0], r[2], "alice", "a", mode="samples")  # v1 vs v1
    s.feedback.record_comparison(r[1], r[3], "bob", "a", mode="samples")  # v2 vs v2
    s.feedback.add_demonstration(r[2], "bob", "Paris.!")
    later = datasets.preference_pairs(s)[-1].updated_at
    assert len(datasets.preference_pairs(s)) == 3
    assert {p.user_id for p in datasets.preference_pairs(s, user_id="bob")} == {"bob"}
    assert len(datasets.preference_pairs(s, version_id=tree.v2)) == 1
    assert len(datasets.preference_pairs(s, version_id=tree.v1)) == 2  # the better answer replaced a v1 reply
    assert [p.source for p in datasets.preference_pairs(s, sources=("better_answer",))] == ["better_answer"]
    assert len(datasets.preference_pairs(s, since=later)) >= 1
    assert datasets.preference_pairs(s, since="2999-01-01") == []
    assert len(datasets.preference_pairs(s, since="2000-01-01T00:00")) == 3
    with pytest.raises(StoreError, match="ISO-8601"):
        datasets.preference_pairs(s, since="yesterday")
    with pytest.raises(StoreError, match="unknown sources"):
        datasets.preference_pairs(s, sources=["thumbs"])
    s.feedback.record_feedback(r[1], "bob", thumbs=1)
    assert len(datasets.unpaired_feedback(s, version_id=tree.v2)) == 1
    assert datasets.unpaired_feedback(s, version_id=tree.v1) == []
    assert datasets.unpaired_feedback(s, user_id="alice") == []
    assert len(datasets.demonstrations(s, user_id="bob")) == 1
    assert datasets.demonstrations(s, version_id=tree.v2) == []


def test_since_normalises_time_zones():
    assert datasets.normalize_since("2026-11-05") == "2026-11-05T00:00:00.000+00:00"
    assert datasets.normalize_since("2026-11-05T14:00+02:00") == "2026-11-05T12:00:00.000+00:00"
    assert datasets.normalize_since(None) is None


def test_prompts_are_user_turns_in_context_deduplicated(tree):
    s = tree.store
    other = s.create_conversation("bob", system_prompt="Be brief.")
    s.add_message(other, "user", "Hi")  # the same context as tree.u1 -> deduplicated
    got = datasets.prompts(s)
    assert [p.prompt[-1]["content"] for p in got] == ["Hi", "Capital of France?"]
    assert got[1].prompt == CONTEXT and got[1].message_id == tree.u2 and got[1].source == "ui"
    assert len(datasets.prompts(s, unique=False)) == 3
    assert [p.user_id for p in datasets.prompts(s, user_id="bob")] == ["bob"]
    assert datasets.prompts(s, sources=["import"]) == []
    assert got[0].to_trl() == {"prompt": CONTEXT[:2]}


def test_empty_or_identical_chosen_text_is_skipped(tree):
    s, r = tree.store, tree.replies
    conv = tree.conversation_id
    from tests.feedback_store.conftest import reply

    empty = reply(s, conv, tree.u2, "", tree.v1)
    same = reply(s, conv, tree.u2, "Paris.", tree.v1)
    s.feedback.record_comparison(empty, r[0], "alice", "a", mode="samples")
    s.feedback.record_comparison(same, r[0], "alice", "a", mode="samples")
    assert datasets.preference_pairs(s) == []
