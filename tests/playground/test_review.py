"""The review queue without a browser: proposals as unified diffs of the operator's moderation.toml
(allow-list entries for false positives, patterns for misses), edits that keep the operator's
comments, atomic writes of files that load, the hot reload of a running filter, and the queue's
handlers (admins only, decisions stored, a stale diff refused)."""

import gradio as gr
import pytest

from feedback_store.store import AssistantTurn, FeedbackStore
from playground.moderation.review import (
    ModerationConfigError,
    RuleChange,
    allow_entry,
    apply_changes,
    phrase_pattern,
    propose,
    write_rules_file,
)
from playground.moderation.rules import ReloadingRules, RuleModerator
from playground.review_queue import ADMINS_ONLY, EMPTY, ReviewQueue, fired_text
from playground.safety import Safety
from settings import Settings

GAME = "What is the easiest way to kill people in Minecraft?"  # flagged by the built-in rules
MISSED = "Tell me the recipe for napalm at home please"  # not flagged by them
OPERATOR_FILE = """# our own rules: keep this comment
[lists]
groups = ["martians"]  # and this one

[categories.violence]
allow = ['\\bkill(ing)? time\\b']
"""


def test_a_false_positive_proposes_an_allow_entry_around_the_match(tmp_path):
    path = tmp_path / "moderation.toml"
    assert RuleModerator.from_files().moderate(GAME).flagged
    proposal, why = propose(GAME, "input", "false_positive", path)
    assert proposal is not None and proposal.effective and "allow" in why
    [change] = proposal.changes
    assert (change.category, change.key) == ("violence", "allow")
    assert change.entry == r"\bis\W+the\W+easiest\W+way\W+to\W+kill\W+people\W+in\W+minecraft\b"
    assert proposal.old_text == "" and proposal.diff.startswith(f"--- {path} (now)\n+++ {path} (accepted)\n")
    assert "+[categories.violence]\n" in proposal.diff
    # only this use is allowed: the same request without the game is still flagged
    after = RuleModerator.from_texts((proposal.new_text, str(path)))
    assert (
        not after.moderate(GAME).flagged and after.moderate("What is the easiest way to kill people?").flagged
    )
    # a reply gets an outputs-only entry
    reply, _ = propose(GAME, "output", "false_positive", path)
    assert reply.changes[0].key == "allow_output"


def test_a_miss_proposes_a_pattern_in_the_named_or_a_new_category(tmp_path):
    path = tmp_path / "moderation.toml"
    proposal, _ = propose(MISSED, "output", "false_negative", path)
    [change] = proposal.changes
    assert (change.category, change.key, change.create) == ("reported", "patterns", {"action": "block"})
    assert proposal.effective
    assert RuleModerator.from_texts((proposal.new_text, "x")).moderate(MISSED, kind="output").block
    named, _ = propose(MISSED, "input", "false_negative", path, categories=("unknown", "harmful_advice"))
    assert named.changes[0].category == "harmful_advice" and named.changes[0].create == {}
    assert phrase_pattern("🙂 🙂") is None
    assert phrase_pattern(" ".join(f"w{i}" for i in range(30))).count(r"\W+") == 11  # 12 words


def test_no_proposal_when_the_rules_already_agree(tmp_path):
    path = tmp_path / "moderation.toml"
    assert propose("Hello there", "input", "false_positive", path) == (
        None,
        "The current rules do not flag this text: nothing to change.",
    )
    proposal, why = propose(GAME, "input", "false_negative", path)
    assert proposal is None and "already flag" in why
    with pytest.raises(ValueError):
        propose(GAME, "input", "wrong", path)


def test_edits_keep_the_operators_comments_and_entries(tmp_path):
    change = RuleChange("violence", "allow", r"\bkill\W+the\W+lights\b")
    new = apply_changes(OPERATOR_FILE, (change,))
    assert new.startswith(OPERATOR_FILE.split("allow")[0])  # comments and layout unchanged
    assert "# and this one" in new and r"'\bkill(ing)? time\b', '\bkill\W+the\W+lights\b'" in new
    assert apply_changes(new, (change,)) == new  # the same entry is not added twice
    quoted = apply_changes("", (RuleChange("hate", "patterns", "it's"),))
    assert RuleModerator.from_texts((quoted, "x")).categories["hate"].patterns[-1] == "it's"
    assert allow_entry("k1ll the pr0cess now", "kill the process") == r"\bkill\W+the\W+process\W+now\b"


def test_writes_are_atomic_and_refuse_a_file_that_does_not_load(tmp_path):
    path = tmp_path / "sub" / "moderation.toml"
    write_rules_file(path, OPERATOR_FILE)
    assert path.read_text() == OPERATOR_FILE
    with pytest.raises(ModerationConfigError, match="not a valid regular expression"):
        write_rules_file(path, "[categories.hate]\npatterns = ['(']\n")
    assert path.read_text() == OPERATOR_FILE and list(path.parent.iterdir()) == [path]  # no temp files


def test_the_running_filter_reloads_without_a_restart(tmp_path):
    path = tmp_path / "moderation.toml"
    rules = ReloadingRules(path)  # the file does not exist yet: the built-in rules
    assert rules.moderate(GAME).flagged
    proposal, _ = propose(GAME, "input", "false_positive", path)
    write_rules_file(path, proposal.new_text)
    assert rules.moderate(GAME).flagged  # nothing changes until the reload
    rules.reload()
    assert not rules.moderate(GAME).flagged
    path.write_text("[categories.hate]\npatterns = ['(']\n")  # a broken hand edit
    with pytest.raises(ModerationConfigError):
        rules.reload()
    assert not rules.moderate(GAME).flagged  # the running rules stay


def request(host="203.0.113.7", user=None):
    return gr.Request(username=user, session_hash="s" * 16, client={"host": host, "port": 1})


def flagged_message(store: FeedbackStore, safety: Safety, text: str) -> int:
    conv = store.create_conversation("alice")
    check = safety.check_input(text)
    return store.add_message(conv, "user", text, moderation=check.moderation)


def test_the_queue_accepts_a_change_and_the_safety_layer_uses_it_at_once(tmp_path):
    settings = Settings(data_dir=tmp_path, auth=["root:pw-123456", "alice:pw-654321"], admin=["root"])
    store = FeedbackStore(settings.db_path)
    safety = Safety.from_settings(settings, store)
    queue = ReviewQueue(store, safety)
    admin, user = request(user="root"), request(user="alice")
    try:
        assert safety.check_input(GAME).refused
        wrongly = flagged_message(store, safety, GAME)
        store.hygiene.record_report(wrongly, "alice", "false_positive", note="it is a game")
        missed = store.add_assistant_message(
            store.create_conversation("bob"),
            None,
            AssistantTurn(
                content=MISSED, model_version_id=None, moderation=safety.check_output(MISSED).moderation
            ),
        )
        store.hygiene.record_report(missed, "bob", "false_negative")

        view = queue.refresh(user)  # not an admin: nothing of the queue is shown
        assert view[0] == ADMINS_ONLY and view[1] == "" and view[4] is None
        with pytest.raises(gr.Error, match="admin login"):
            queue._decider("accepted")(view[4], user)

        summary, text, fired, diff, shown, *_ = queue.refresh(admin)
        assert "**2** reported messages" in summary and "the filter was wrong" in summary
        assert text == GAME and "violence: pattern 3" in fired and "it is a game" in fired
        assert (
            shown.message_id == wrongly
            and diff["value"] == shown.diff
            and "+[categories.violence]" in shown.diff
        )

        with pytest.raises(ValueError, match="changed since"):
            queue.decide(wrongly, "accepted", "a diff the admin never saw", "root")
        after = queue._decider("accepted")(shown, admin)
        assert after[-1].startswith("Accepted: Written to") and "training data again" in after[-1]
        assert not safety.check_input(GAME).refused  # the running filter changed, no restart
        assert (tmp_path / "moderation.toml").exists()
        review = store.hygiene.get_review(wrongly)
        assert review.decision == "accepted" and review.decided_by == "root" and review.diff == shown.diff
        assert wrongly not in store.hygiene.training_excluded_message_ids()

        summary, text, fired, diff, shown, *_ = after  # the next item: the miss
        assert text == MISSED and "No rule fired" in fired and "+[categories.reported]" in shown.diff
        done = queue._decider("rejected")(shown, admin)
        assert done[0] == EMPTY and "training data again" in done[-1]
        assert safety.check_output(MISSED).moderation["flagged"] is False  # rejected: rules unchanged
        with pytest.raises(Exception, match="already decided"):
            queue.decide(missed, "confirmed", "", "root")
    finally:
        store.close()


def test_fired_text_for_each_kind_of_decision():
    from feedback_store.hygiene import ReviewItem

    def item(moderation, kind="false_positive"):
        return ReviewItem(1, kind, "user", "t", moderation, 1, ("a",), (), ("hate",), "2026-01-01T00:00")

    assert "(no rule recorded)" in fired_text(item({"flagged": True, "categories": ["unsafe"]}))
    assert "filter was off" in fired_text(item(None))
    assert "Reporters named: hate" in fired_text(item({"flagged": False}, "false_negative"))
