"""Every label's mapping to training signal and every weight: the pure rules (feedback_store.labels,
stats.tied_ranking_pairs, the ranks check) and what the training readers make of stored labels
(KTO labels from thumbs, scores and flags; score pairs; rankings with ties; harmful flags and notes in
SFT; Bradley-Terry battles with ties)."""

import pytest

from feedback_store import datasets, labels, summary
from feedback_store import feedback as fb
from feedback_store.stats import Battle, tied_ranking_pairs
from feedback_store.store import StoreError


# -- the pure mappings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "thumbs, score, flags, expected",
    [
        (1, None, (), (True, "thumbs")),
        (-1, None, (), (False, "thumbs")),
        (None, 7, (), (True, "score")),
        (None, 5, (), (True, "score")),  # the desirable threshold: >= 5
        (None, 4, (), (None, "neutral")),  # 4 is neutral: no label
        (None, 3, (), (False, "score")),  # the undesirable threshold: <= 3
        (None, 1, (), (False, "score")),
        (None, None, (), (None, "neutral")),
        (1, 6, (), (True, "thumbs")),  # agreeing labels
        (-1, 2, (), (False, "thumbs")),
        (1, 4, (), (True, "thumbs")),  # a neutral score does not contradict a thumbs
        (1, 2, (), (None, "contradictory")),  # thumbs up, score <= 3: dropped
        (-1, 6, (), (None, "contradictory")),  # thumbs down, score >= 5: dropped
        (1, 7, ("fails_instruction",), (False, "flags")),  # a flag makes a reply undesirable
        (None, None, ("harmful_advice",), (False, "flags")),
    ],
)
def test_kto_label(thumbs, score, flags, expected):
    assert labels.kto_label(thumbs, score, flags) == expected


def test_label_policy_thresholds_are_configurable_and_checked():
    strict = labels.LabelPolicy(desirable_score=6, undesirable_score=2)
    assert labels.kto_label(None, 5, (), strict) == (None, "neutral")
    assert labels.kto_label(None, 6, (), strict) == (True, "score")
    assert labels.kto_label(None, 3, (), strict) == (None, "neutral")
    assert (labels.LABEL_POLICY.desirable_score, labels.LABEL_POLICY.undesirable_score) == (5, 3)
    with pytest.raises(ValueError, match="thresholds"):
        labels.LabelPolicy(desirable_score=4, undesirable_score=4)


def test_score_pairs_and_group_weight():
    assert labels.score_pairs([("a", 3), ("b", 6), ("c", 6), ("d", 1)]) == [
        ("b", "a"),
        ("b", "d"),
        ("c", "a"),
        ("c", "d"),
        ("a", "d"),
    ]  # b and c tie: no pair between them
    assert labels.score_pairs([("a", 4), ("b", 4)]) == []
    assert labels.group_weight(5) == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        labels.group_weight(0)


def test_harmful_flags_are_instructgpt_flags():
    assert set(fb.INSTRUCTGPT_FLAGS) >= labels.HARMFUL_FLAGS
    assert "fails_instruction" not in labels.HARMFUL_FLAGS and "harmful_advice" in labels.HARMFUL_FLAGS


def test_tied_ranking_pairs_instructgpt_example():
    # y_D > y_C > y_A = y_B: 6 pairs, one of them a tie
    got = tied_ranking_pairs(["D", "C", "A", "B"], [1, 2, 3, 3])
    assert [(a, b) for a, b, tied in got if not tied] == [
        ("D", "C"),
        ("D", "A"),
        ("D", "B"),
        ("C", "A"),
        ("C", "B"),
    ]
    assert [(a, b) for a, b, tied in got if tied] == [("A", "B")]
    with pytest.raises(ValueError, match="must not decrease"):
        tied_ranking_pairs(["a", "b"], [2, 1])
    with pytest.raises(ValueError, match="once"):
        tied_ranking_pairs(["a", "a"], [1, 2])


def test_ranks_are_checked_and_stored_dense():
    assert fb.check_ranks([1, 1, 3, 4], 4) == [1, 1, 3, 4]
    assert fb.dense_ranks([1, 1, 3, 4]) == [1, 1, 2, 3]
    for ranks, message in [
        ([1, 2], "one rank per reply"),
        ([1, 5, 2], "from 1 \\(best\\) to 3"),
        ([0, 1, 2], "from 1"),
        ([True, 2, 3], "whole numbers"),
        ([2, 2, 2], "at least two different ranks"),
    ]:
        with pytest.raises(StoreError, match=message):
            fb.check_ranks(ranks, 3)


# -- stored labels through the readers -----------------------------------------------------------------
def test_scores_and_flags_are_kto_labels(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_feedback(r[0], "alice", score=6)  # desirable by score
    s.feedback.record_feedback(r[1], "alice", score=2)  # undesirable by score
    s.feedback.record_feedback(r[2], "alice", score=4)  # neutral: no example
    s.feedback.record_feedback(r[3], "alice", thumbs=1, score=1)  # contradictory: no example
    s.feedback.record_feedback(r[4], "alice", thumbs=1, flags=["fails_instruction"])  # flags win
    s.feedback.record_feedback(r[2], "bob", note="only a note")  # no label at all
    got = {(e.message_id, e.user_id): e for e in datasets.unpaired_feedback(s)}
    assert {k: (e.label, e.label_source) for k, e in got.items()} == {
        (r[0], "alice"): (True, "score"),
        (r[1], "alice"): (False, "score"),
        (r[4], "alice"): (False, "flags"),
    }
    assert got[(r[4], "alice")].flags == ("fails_instruction",) and got[(r[4], "alice")].thumbs == 1
    strict = labels.LabelPolicy(desirable_score=7, undesirable_score=1)
    assert {e.message_id for e in datasets.unpaired_feedback(s, policy=strict)} == {r[4]}


def test_one_users_scores_on_one_prompt_are_pairs_weighing_one_vote(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_feedback(r[0], "alice", score=6)
    s.feedback.record_feedback(r[1], "alice", score=3)
    s.feedback.record_feedback(r[2], "alice", score=3)  # ties with r[1]: no pair between them
    s.feedback.record_feedback(r[3], "bob", score=1)  # bob's only score: no pair
    s.feedback.record_feedback(tree.r1, "alice", score=7)  # another prompt: its own group of one
    pairs = datasets.preference_pairs(s, sources=["score"])
    assert [(p.chosen_message_id, p.rejected_message_id) for p in pairs] == [(r[0], r[1]), (r[0], r[2])]
    assert all(p.source == "score" and p.weight == pytest.approx(1 / 2) for p in pairs)
    assert {p.group for p in pairs} == {("score", "alice", tree.u2)}
    assert pairs[0].prompt[-1] == {"role": "user", "content": "Capital of France?"}
    assert pairs[0].prompt_message_id == tree.u2
    assert "score" in datasets.PAIR_SOURCES  # the reward model and DPO read them by default
    assert len(datasets.preference_pairs(s)) == 2


def test_ranking_with_ties_stores_ranks_and_expands_without_tied_pairs(tree):
    s, r = tree.store, tree.replies
    # displayed r0, r1, r2, r3 ranked 3, 1, 3, 2: r1 > r3 > r0 = r2
    ranking = s.feedback.record_ranking([r[0], r[1], r[2], r[3]], "alice", ranks=[3, 1, 3, 2])
    assert ranking.message_ids == (r[1], r[3], r[0], r[2]) and ranking.ranks == (1, 2, 3, 3)
    assert ranking.tied and ranking.pairs == 5
    assert s.feedback.get_ranking(ranking.id).ranks == (1, 2, 3, 3)
    pairs = datasets.preference_pairs(s, sources=["ranking"])
    assert {(p.chosen_message_id, p.rejected_message_id) for p in pairs} == {
        (r[1], r[3]),
        (r[1], r[0]),
        (r[1], r[2]),
        (r[3], r[0]),
        (r[3], r[2]),
    }
    assert all(p.weight == pytest.approx(1 / 5) for p in pairs)  # the ranking counts as one vote
    assert {p.group for p in pairs} == {("ranking", ranking.id)}
    # without ranks: ranked in the order given (the old call keeps working)
    plain = s.feedback.record_ranking([r[0], r[4]], "bob")
    assert plain.ranks == (1, 2) and not plain.tied and plain.pairs == 1
    with pytest.raises(StoreError, match="at least two different ranks"):
        s.feedback.record_ranking([r[0], r[1]], "carol", ranks=[1, 1])


def test_rankings_stored_before_ties_rank_by_position(tree):
    s, r = tree.store, tree.replies
    ranking = s.feedback.record_ranking([r[2], r[0], r[1]], "alice")
    with s.write() as db:  # a row written before the rank column existed
        db.execute("UPDATE ranking_items SET rank = NULL WHERE ranking_id = ?", [ranking.id])
    assert s.feedback.get_ranking(ranking.id).ranks == (1, 2, 3)
    pairs = datasets.preference_pairs(s, sources=["ranking"])
    assert len(pairs) == 3 and all(p.weight == pytest.approx(1 / 3) for p in pairs)
    assert pairs[0].chosen_message_id == r[2]


def test_bradley_terry_battles_count_tied_ranks_as_ties(tree):
    s, r = tree.store, tree.replies  # r0, r2, r4 from v1; r1, r3 from v2
    s.feedback.record_ranking([r[1], r[0], r[2]], "carol", ranks=[1, 1, 2])  # v2 = v1 > v1
    v1, v2 = f"v{tree.v1} base", f"v{tree.v2} dpo-1"
    third = pytest.approx(1 / 3)
    assert summary.battles(s, "version") == [Battle(v2, v1, "tie", third), Battle(v2, v1, "a", third)]


def test_harmful_flags_keep_a_reply_out_of_sft_and_notes_go_with_demonstrations(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_feedback(r[2], "bob", score=2, note="Lyon is not the capital.")
    d = s.feedback.add_demonstration(r[2], "bob", "Paris is the capital of France.")
    [demo] = datasets.demonstrations(s)
    assert demo.note == "Lyon is not the capital." and demo.demonstration_id == d.id
    s.feedback.add_demonstration(r[0], "carol", "Paris.!")  # carol wrote no note
    assert [x.note for x in datasets.demonstrations(s, user_id="carol")] == [None]

    # A reply in the prompt context of a demonstration, flagged as harmful: no SFT example holds it.
    conv = tree.conversation_id
    u3 = s.add_message(conv, "user", "And of Italy?", parent_id=r[0])
    from tests.feedback_store.conftest import reply

    r5 = reply(s, conv, u3, "Rome.", tree.v1)
    s.feedback.add_demonstration(r5, "bob", "Rome is the capital of Italy.")
    assert len(datasets.demonstrations(s)) == 3
    s.feedback.record_feedback(r[0], "dave", flags=["fails_instruction"])  # not harmful: stays
    assert len(datasets.demonstrations(s)) == 3
    s.feedback.record_feedback(r[0], "dave", flags=["harmful_advice"])
    got = datasets.demonstrations(s)
    assert {x.improves_message_id for x in got} == {r[2], r[0]}  # the one after r[0] is gone
    assert {x.improves_message_id for x in datasets.demonstrations(s, exclude_harmful=False)} == {
        r[2],
        r[0],
        r5,
    }
    # the better answer to the harmful reply itself stays: the reply is its rejected side, not its text
    assert any(p.demonstration_id for p in datasets.preference_pairs(s, sources=["better_answer"]))
    # and the flag makes the reply an undesirable KTO example
    [kto] = [e for e in datasets.unpaired_feedback(s) if e.user_id == "dave"]
    assert (kto.message_id, kto.label, kto.label_source) == (r[0], False, "flags")
