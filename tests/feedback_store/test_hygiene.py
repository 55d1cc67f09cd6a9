"""The store's safety records: moderation reports, events, operators' decisions, the users and texts
training leaves out, the filter's precision as users see it, and text SQLite cannot hold."""

import pytest

from feedback_store import datasets
from feedback_store import hygiene as safety
from feedback_store.store import AssistantTurn, StoreError

FLAGGED = {"flagged": True, "categories": ["violence"], "action": "refused"}
ALLOWED = {"flagged": False, "categories": [], "action": "allowed"}


def flagged_reply(tree, text="You should hurt him.", parent=None):
    return tree.store.add_assistant_message(
        tree.conversation_id,
        parent or tree.u2,
        AssistantTurn(
            content=text,
            model_version_id=tree.v1,
            moderation={"flagged": True, "categories": ["violence"], "action": "withheld"},
        ),
    )


def test_reports_check_the_decision_and_upsert(tree):
    s = tree.store
    bad = flagged_reply(tree)
    fine = tree.replies[0]
    with pytest.raises(StoreError, match="was not blocked"):
        s.hygiene.record_report(fine, "alice", "false_positive")
    with pytest.raises(StoreError, match="already blocked"):
        s.hygiene.record_report(bad, "alice", "false_negative")
    with pytest.raises(StoreError, match="kind must be"):
        s.hygiene.record_report(bad, "alice", "wrong")
    with pytest.raises(StoreError, match="No message"):
        s.hygiene.record_report(10_000, "alice", "false_positive")
    for _ in range(2):  # Gradio fires a flag-menu option twice: one row
        report = s.hygiene.record_report(bad, "alice", "false_positive", note="it was a quote")
    assert report.categories == ("violence",) and report.note == "it was a quote"
    s.hygiene.record_report(fine, "bob", "false_negative", categories=["hate"])
    assert [(r.message_id, r.user_id, r.kind) for r in s.hygiene.list_reports()] == [
        (bad, "alice", "false_positive"),
        (fine, "bob", "false_negative"),
    ]


def test_stats_precision_and_recall_as_users_see_them(tree):
    s = tree.store
    bad1, bad2 = flagged_reply(tree, "a"), flagged_reply(tree, "b")
    conv = s.create_conversation("mallory")
    u = s.add_message(conv, "user", "I will hurt you", moderation=FLAGGED)
    s.add_message(conv, "assistant", "refused", parent_id=u, moderation={**FLAGGED, "action": "refusal"})
    s.hygiene.record_report(bad1, "alice", "false_positive")
    s.hygiene.record_report(bad1, "bob", "false_positive")  # two reports, one wrong decision
    s.hygiene.record_report(tree.replies[2], "bob", "false_negative")
    stats = s.hygiene.moderation_stats()
    assert (stats.flagged, stats.flagged_inputs, stats.flagged_outputs) == (
        3,
        1,
        2,
    )  # the refusal text is no decision
    assert (stats.false_positive_reports, stats.false_negative_reports) == (2, 1)
    assert stats.precision == pytest.approx(2 / 3) and stats.recall == pytest.approx(3 / 4)
    [violence] = stats.by_category
    assert (violence.category, violence.flagged, violence.reported_wrong) == ("violence", 3, 1)
    low, high = violence.interval
    assert low < 2 / 3 < high
    assert bad2 in s.hygiene.flagged_message_ids()


def test_excluded_users_rules_and_operator_decisions(tree):
    s = tree.store
    conv = s.create_conversation("mallory")
    for _ in range(3):
        s.add_message(conv, "user", "threat", moderation=FLAGGED)
    s.add_message(
        s.create_conversation("carol"), "user", "threat", moderation=FLAGGED
    )  # one is not a pattern
    s.hygiene.record_event("rate_limited", "spammer", client_ip="203.0.113.9", scope="chat")
    assert s.hygiene.excluded_users() == {"mallory", "spammer"}
    assert s.hygiene.excluded_users(safety.HygienePolicy(min_rate_limited=0, min_flagged=1)) == {
        "mallory",
        "carol",
    }
    s.hygiene.set_user_flag("mallory", excluded=False, reason="a red-teamer", set_by="admin")
    s.hygiene.set_user_flag("alice", excluded=True, reason="vote stuffing")
    assert s.hygiene.excluded_users() == {"spammer", "alice"}
    records = s.hygiene.user_records()
    assert records["mallory"].flagged == 3 and records["mallory"].operator is False
    assert s.hygiene.clear_user_flag("mallory") and not s.hygiene.clear_user_flag("nobody")
    assert "mallory" in s.hygiene.excluded_users()


def test_datasets_leave_out_flagged_text_by_default(tree):
    s, r = tree.store, tree.replies
    bad = flagged_reply(tree, "Flagged reply.")
    s.feedback.record_comparison(r[0], r[1], "alice", "b", mode="samples")
    s.feedback.record_comparison(bad, r[1], "alice", "b", mode="samples")
    s.feedback.record_ranking([r[2], bad, r[3]], "bob")
    s.feedback.record_feedback(bad, "alice", thumbs=-1)
    s.feedback.record_feedback(r[0], "alice", thumbs=1)
    demo_ok = s.feedback.add_demonstration(r[3], "alice", "Paris is the capital of France.")
    demo_bad = s.feedback.add_demonstration(r[2], "alice", "Something the filter flagged.")
    s.hygiene.set_demonstration_moderation(demo_bad.id, {"flagged": True, "categories": ["hate"]})
    s.hygiene.set_demonstration_moderation(demo_ok.id, ALLOWED)
    s.feedback.add_demonstration(bad, "bob", "A fine answer to a flagged reply.")

    pairs = datasets.preference_pairs(s)
    assert {(p.source, p.chosen_message_id, p.rejected_message_id) for p in pairs} == {
        ("comparison", r[1], r[0]),
        ("better_answer", None, r[3]),
    }
    assert len(datasets.preference_pairs(s, exclude_flagged=False)) == 2 + 3 + 3
    assert [e.message_id for e in datasets.unpaired_feedback(s)] == [r[0]]
    assert len(datasets.unpaired_feedback(s, exclude_flagged=False)) == 2
    # the better answer on a flagged reply is kept for SFT (its text is fine); the flagged answer is not
    assert {d.demonstration_id for d in datasets.demonstrations(s)} == {demo_ok.id, demo_ok.id + 2}
    assert len(datasets.demonstrations(s, exclude_flagged=False)) == 3


def test_a_flagged_message_in_the_context_leaves_out_everything_after_it(tree):
    s = tree.store
    conv = s.create_conversation("mallory")
    u1 = s.add_message(conv, "user", "I will hurt you", moderation=FLAGGED)
    a1 = s.add_assistant_message(conv, u1, AssistantTurn(content="Please don't.", model_version_id=tree.v1))
    u2 = s.add_message(conv, "user", "Fine, what is 2+2?", parent_id=a1, moderation=ALLOWED)
    a2 = s.add_assistant_message(conv, u2, AssistantTurn(content="4", model_version_id=tree.v1))
    b2 = s.add_assistant_message(conv, u2, AssistantTurn(content="5", model_version_id=tree.v1))
    s.feedback.record_comparison(a2, b2, "mallory", "a", mode="samples")
    s.feedback.record_feedback(a2, "mallory", thumbs=1)
    assert datasets.preference_pairs(s) == [] and datasets.unpaired_feedback(s) == []
    assert u2 not in {p.message_id for p in datasets.prompts(s)}
    assert u2 in {p.message_id for p in datasets.prompts(s, exclude_flagged=False)}


def test_text_sqlite_cannot_hold_is_made_storable(store):
    v = store.versions.ensure_base("m.gguf").id
    conv = store.create_conversation("u", system_prompt="sys \ud800")
    bad = "a\x00b \udc80 c"
    mid = store.add_message(conv, "user", bad)
    rid = store.add_assistant_message(
        conv,
        mid,
        AssistantTurn(content="ok \ud83d", model_version_id=v, prompt="p \udfff", trace=[{"t": "\ud800"}]),
    )
    assert store.get_message(mid).content == "ab \ufffd c"
    reply = store.get_message(rid)
    assert reply.content == "ok \ufffd" and reply.prompt == "p \ufffd" and reply.trace == [{"t": "\ufffd"}]
    assert store.get_conversation(conv)["system_prompt"] == "sys \ufffd"
    feedback = store.feedback.record_feedback(rid, "u", thumbs=1, note="n \ud800")
    assert feedback.note == "n \ufffd"
    assert store.feedback.add_demonstration(rid, "u", "better \udbff").content == "better \ufffd"
