"""Reports on the content filter act on training data: a reported miss leaves every dataset at once and
comes back only when an admin rejects the report; a wrongly flagged text comes back once an admin
confirms it. The review queue lists undecided reports once per message, and a decision is final."""

import pytest

from feedback_store import datasets
from feedback_store.store import AssistantTurn, StoreError

WITHHELD = {"flagged": True, "categories": ["violence"], "action": "withheld"}


def every_dataset_ids(s) -> set[int]:
    """The reply ids the preference and KTO datasets hold (SFT holds no reply: see the context test)."""
    ids = set()
    for p in datasets.preference_pairs(s):
        ids |= {p.chosen_message_id, p.rejected_message_id}
    ids |= {e.message_id for e in datasets.unpaired_feedback(s)}
    return ids - {None}


def feedback_on(s, r, user="alice"):
    s.feedback.record_comparison(r[0], r[1], user, "a", mode="samples")
    s.feedback.record_ranking([r[2], r[0], r[4]], user)
    s.feedback.record_feedback(r[0], user, thumbs=1)
    s.feedback.record_feedback(r[1], user, score=6)
    s.feedback.add_demonstration(r[0], "bob", "Paris, of course.")


def test_should_have_been_blocked_leaves_every_dataset_at_once_until_rejected(tree):
    s, r = tree.store, tree.replies
    feedback_on(s, r)
    assert r[0] in every_dataset_ids(s)
    s.hygiene.record_report(r[0], "carol", "false_negative", note="it insults me")
    assert r[0] in s.hygiene.training_excluded_message_ids()
    assert r[0] not in every_dataset_ids(s)  # pairs, KTO and SFT alike, no cycle needed
    assert datasets.preference_pairs(s, sources=["ranking"]) == []  # the whole ranking goes
    [item] = s.hygiene.review_queue()
    assert (item.message_id, item.kind, item.role, item.content) == (
        r[0],
        "false_negative",
        "assistant",
        "Paris.",
    )
    assert item.notes == ("it insults me",) and item.users == ("carol",) and item.moderation_kind == "output"
    review = s.hygiene.record_review(r[0], "rejected", "admin")
    assert review.decision == "rejected" and review.kind == "false_negative"
    assert r[0] in every_dataset_ids(s) and s.hygiene.review_queue() == []


def test_a_reported_message_in_the_context_drops_sft_examples_too(tree):
    s, r = tree.store, tree.replies
    s.feedback.add_demonstration(r[0], "bob", "Paris, of course.")
    assert len(datasets.demonstrations(s)) == 1
    s.hygiene.record_report(tree.r1, "carol", "false_negative")  # "Hello!" precedes the prompt
    assert datasets.demonstrations(s) == [] and datasets.prompts(s)[-1].prompt[-1]["content"] == "Hi"


def test_a_confirmed_miss_stays_out(tree):
    s, r = tree.store, tree.replies
    feedback_on(s, r)
    s.hygiene.record_report(r[0], "carol", "false_negative")
    s.hygiene.record_review(r[0], "accepted", "admin", change={"path": "x"}, diff="+x")
    assert r[0] not in every_dataset_ids(s)
    assert s.hygiene.get_review(r[0]).change == {"path": "x"}


def test_the_filter_was_wrong_readmits_the_text_once_confirmed(tree):
    s, r = tree.store, tree.replies
    conv = tree.conversation_id
    wrongly = s.add_assistant_message(
        conv,
        tree.u2,
        AssistantTurn(content="Paris, which kills it.", model_version_id=tree.v1, moderation=WITHHELD),
    )
    s.feedback.record_comparison(wrongly, r[2], "alice", "a", mode="samples")
    s.feedback.record_feedback(wrongly, "alice", thumbs=1)
    assert wrongly not in every_dataset_ids(s)  # flagged: out
    s.hygiene.record_report(wrongly, "alice", "false_positive")
    s.hygiene.record_report(wrongly, "bob", "false_positive")
    assert wrongly not in every_dataset_ids(s)  # a report alone does not re-admit it
    [item] = s.hygiene.review_queue()  # two reports, one item
    assert item.reports == 2 and item.users == ("alice", "bob") and item.categories == ("violence",)
    assert s.hygiene.pending_reviews() == 1
    s.hygiene.record_review(wrongly, "confirmed", "admin")
    assert wrongly in every_dataset_ids(s)
    assert s.hygiene.flagged_message_ids() >= {wrongly}  # the filter's own record is unchanged
    assert s.hygiene.pending_reviews() == 0


def test_a_rejected_false_positive_stays_out(tree):
    s = tree.store
    bad = s.add_assistant_message(
        tree.conversation_id,
        tree.u2,
        AssistantTurn(content="You should hurt him.", model_version_id=tree.v1, moderation=WITHHELD),
    )
    s.feedback.record_feedback(bad, "alice", thumbs=-1)
    s.hygiene.record_report(bad, "alice", "false_positive")
    s.hygiene.record_review(bad, "rejected", "admin")
    assert bad not in every_dataset_ids(s)


def test_a_decision_is_final_and_checked(tree):
    s, r = tree.store, tree.replies
    with pytest.raises(StoreError, match="no reports"):
        s.hygiene.record_review(r[0], "confirmed", "admin")
    s.hygiene.record_report(r[0], "carol", "false_negative")
    with pytest.raises(StoreError, match="decision must be"):
        s.hygiene.record_review(r[0], "maybe", "admin")
    with pytest.raises(StoreError, match="only an accepted"):
        s.hygiene.record_review(r[0], "rejected", "admin", change={"x": 1})
    s.hygiene.record_review(r[0], "confirmed", "admin")
    with pytest.raises(StoreError, match="already decided"):
        s.hygiene.record_review(r[0], "rejected", "another admin")
    s.hygiene.record_report(r[0], "dave", "false_negative")  # a later report does not bring it back
    assert s.hygiene.review_queue() == [] and [v.decided_by for v in s.hygiene.list_reviews()] == ["admin"]


def test_deleting_the_conversation_deletes_its_reviews(tree):
    s, r = tree.store, tree.replies
    s.hygiene.record_report(r[0], "alice", "false_negative")
    s.hygiene.record_review(r[0], "confirmed", "admin")
    s.conversations.delete(tree.conversation_id, "alice")
    assert s.count("moderation_reviews") == 0
