"""The feedback write API: upserts (repeated events add no rows), validation, partial updates."""

import pytest

from feedback_store import feedback as fb
from feedback_store.store import StoreError


def rows(store, table):
    return store.count(table)


def test_thumbs_with_a_reason_fired_twice_is_one_row(tree):
    s, m = tree.store, tree.replies[0]
    first = s.feedback.record_feedback(m, "alice", thumbs=-1, add_reasons=["too_long"])
    second = s.feedback.record_feedback(
        m, "alice", thumbs=-1, add_reasons=["too_long"]
    )  # Gradio's double fire
    assert rows(s, "feedback") == 1
    assert second == first  # nothing changed, not even updated_at
    assert first.thumbs == -1 and first.reasons == ("too_long",)
    both = s.feedback.record_feedback(m, "alice", add_reasons=["incorrect"])
    assert both.reasons == ("incorrect", "too_long")  # catalogue order, no duplicates
    assert rows(s, "feedback") == 1
    assert s.feedback.record_feedback(m, "bob", thumbs=1).id != first.id  # another user: another row
    assert rows(s, "feedback") == 2


def test_partial_updates_keep_the_other_fields(tree):
    s, m = tree.store, tree.replies[1]
    s.feedback.record_feedback(m, "alice", thumbs=1, reasons=["clear"])
    s.feedback.record_feedback(m, "alice", score=6, flags=["moral_judgment"], note="  good  ")
    got = s.feedback.get_feedback(m, "alice")
    assert (got.thumbs, got.reasons, got.score, got.flags, got.note) == (
        1,
        ("clear",),
        6,
        ("moral_judgment",),
        "good",
    )
    assert got.updated_at >= got.created_at
    s.feedback.record_feedback(m, "alice", score=None, flags=[], note="")
    got = s.feedback.get_feedback(m, "alice")
    assert (got.thumbs, got.score, got.flags, got.note) == (1, None, (), None)


def test_turning_thumbs_around_drops_reasons_that_no_longer_fit(tree):
    s, m = tree.store, tree.replies[0]
    s.feedback.record_feedback(m, "alice", thumbs=-1, reasons=["too_long", "other"])
    assert s.feedback.record_feedback(m, "alice", thumbs=1).reasons == ("other",)
    cleared = s.feedback.record_feedback(m, "alice", thumbs=None)
    assert cleared.thumbs is None and cleared.reasons == ()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"thumbs": 2}, "thumbs must be"),
        ({"score": 0}, "score must be an integer from 1 to 7"),
        ({"score": 8}, "score must be"),
        ({"score": True}, "score must be"),
        ({"score": "5"}, "score must be"),
        ({"flags": ["rude"]}, "unknown flags"),
        ({"reasons": ["too_long"]}, "reasons go with a thumbs"),
        ({"thumbs": 1, "reasons": ["too_long"]}, "unknown reasons for a thumbs up"),
        ({"note": "x" * (fb.MAX_NOTE_CHARS + 1)}, "at most"),
    ],
)
def test_bad_feedback_is_refused_and_writes_nothing(tree, kwargs, message):
    with pytest.raises(StoreError, match=message):
        tree.store.feedback.record_feedback(tree.replies[0], "alice", **kwargs)
    assert rows(tree.store, "feedback") == 0


def test_feedback_only_on_existing_replies_by_a_named_user(tree):
    with pytest.raises(StoreError, match="user message"):
        tree.store.feedback.record_feedback(tree.u2, "alice", thumbs=1)
    with pytest.raises(StoreError, match="No message 999"):
        tree.store.feedback.record_feedback(999, "alice", thumbs=1)
    with pytest.raises(StoreError, match="user_id"):
        tree.store.feedback.record_feedback(tree.replies[0], " ", thumbs=1)
    assert tree.store.feedback.get_feedback(tree.replies[0], "alice") is None
    assert tree.store.feedback.list_feedback() == []


def test_list_feedback_by_message(tree):
    tree.store.feedback.record_feedback(tree.replies[0], "alice", thumbs=1)
    tree.store.feedback.record_feedback(tree.replies[0], "bob", thumbs=-1)
    tree.store.feedback.record_feedback(tree.replies[1], "bob", thumbs=-1)
    assert [f.user_id for f in tree.store.feedback.list_feedback(message_id=tree.replies[0])] == [
        "alice",
        "bob",
    ]
    assert len(tree.store.feedback.list_feedback()) == 3


def test_better_answer_is_one_row_per_user_and_reply(tree):
    s, m = tree.store, tree.replies[2]
    d1 = s.feedback.add_demonstration(m, "alice", "  Paris is the capital of France.  ")
    assert d1.content == "Paris is the capital of France."
    assert (
        s.feedback.add_demonstration(m, "alice", "Paris is the capital of France.") == d1
    )  # repeat: unchanged
    d2 = s.feedback.add_demonstration(m, "alice", "Paris.")
    assert d2.id == d1.id and d2.content == "Paris." and rows(s, "demonstrations") == 1
    assert s.feedback.get_demonstration(m, "alice").content == "Paris."
    with pytest.raises(StoreError, match="empty"):
        s.feedback.add_demonstration(m, "bob", "   ")
    with pytest.raises(StoreError, match="same as the reply"):
        s.feedback.add_demonstration(m, "bob", "Lyon.")
    with pytest.raises(StoreError, match="user message"):
        s.feedback.add_demonstration(tree.u2, "bob", "x")
    assert rows(s, "demonstrations") == 1


def test_comparison_vote_is_upserted_and_records_what_differed(tree):
    s, a, b = tree.store, tree.replies[0], tree.replies[1]
    c1 = s.feedback.record_comparison(a, b, "alice", "a", mode="versions", label_a="v1", label_b="v2")
    c2 = s.feedback.record_comparison(
        a, b, "alice", "b", mode="versions", label_a="v1", label_b="v2"
    )  # changed mind
    assert c2.id == c1.id and c2.vote == "b" and rows(s, "comparisons") == 1
    assert c1.differed == {"model_version_id": [tree.v1, tree.v2], "params.seed": [0, 1]}
    assert c1.anonymous is True
    assert s.feedback.get_comparison(c1.id).vote == "b"
    s.feedback.record_comparison(
        a, b, "bob", "tie", mode="samples", anonymous=False, differed={"seed": [1, 2]}
    )
    assert [c.vote for c in s.feedback.list_comparisons()] == ["b", "tie"]
    assert s.feedback.list_comparisons()[1].differed == {"seed": [1, 2]}


@pytest.mark.parametrize(
    "a_b, vote, message",
    [
        ("same", "a", "two different replies"),
        ("ok", "maybe", "vote must be one of"),
        ("other_prompt", "a", "same prompt"),
        ("user", "a", "user message"),
    ],
)
def test_bad_comparisons_are_refused(tree, a_b, vote, message):
    a = tree.replies[0]
    b = {"same": a, "ok": tree.replies[1], "other_prompt": tree.r1, "user": tree.u2}[a_b]
    with pytest.raises(StoreError, match=message):
        tree.store.feedback.record_comparison(a, b, "alice", vote, mode="samples")
    assert rows(tree.store, "comparisons") == 0


def test_ranking_is_stored_in_order_and_reranking_updates_it(tree):
    s, r = tree.store, tree.replies
    k4 = s.feedback.record_ranking([r[3], r[0], r[2], r[1]], "alice")
    assert k4.k == 4 and k4.prompt_message_id == tree.u2
    assert s.feedback.get_ranking(k4.id).message_ids == (r[3], r[0], r[2], r[1])
    again = s.feedback.record_ranking([r[0], r[1], r[2], r[3]], "alice")  # same replies: an update
    assert again.id == k4.id and rows(s, "rankings") == 1 and rows(s, "ranking_items") == 4
    assert s.feedback.get_ranking(k4.id).message_ids == (r[0], r[1], r[2], r[3])
    s.feedback.record_ranking([r[0], r[1]], "alice")  # another set of replies: another ranking
    assert rows(s, "rankings") == 2


@pytest.mark.parametrize(
    "which, message",
    [
        ([0], "2 to 9 replies"),
        ([0, 0, 1], "once"),
        ([0, "r1"], "same prompt"),
        ([0, "u2"], "user message"),
    ],
)
def test_bad_rankings_are_refused(tree, which, message):
    ids = [tree.replies[w] if isinstance(w, int) else getattr(tree, w) for w in which]
    with pytest.raises(StoreError, match=message):
        tree.store.feedback.record_ranking(ids, "alice")
    assert rows(tree.store, "rankings") == 0 and rows(tree.store, "ranking_items") == 0


def test_more_than_nine_replies_cannot_be_ranked(tree):
    ids = tree.replies + [tree.replies[0] + 100 + i for i in range(5)]
    with pytest.raises(StoreError, match="2 to 9"):
        tree.store.feedback.record_ranking(ids, "alice")


def test_pair_weight():
    assert fb.pair_weight(2) == 1.0
    assert fb.pair_weight(4) == pytest.approx(1 / 6)
    assert fb.pair_weight(9) == pytest.approx(1 / 36)
