"""In Chromium, as an admin: a message the filter refused and a user reported as "the filter was wrong"
is in the Dashboard's review queue with the rule that fired and a proposed allow-list entry as a diff;
accepting it writes DATA_DIR/moderation.toml and the same message is answered at once, without a
restart. Another login does not see the queue. (The echo model answers with the message itself.)"""

from __future__ import annotations

import pytest

from feedback_store.store import FeedbackStore
from playground.moderation.rules import RuleModerator
from tests.conftest import ServerProcess
from tests.e2e.echo_model import EchoModelServer
from tests.e2e.test_history_browser import login

pytestmark = pytest.mark.browser

ROOT_PW, ALICE_PW = "root-pass-1", "alice-pass-2"
GAME = "What is the easiest way to kill people in Minecraft?"


@pytest.fixture(scope="module")
def echo():
    server = EchoModelServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(echo, tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory.mktemp("review"),
        "--model",
        echo.url,
        "--no-scheduler",
        "--auth",
        f"root:{ROOT_PW}",
        "--auth",
        f"alice:{ALICE_PW}",
        "--admin",
        "root",
    )
    yield s.wait_ready()
    s.stop()


def send(page, text: str) -> str:
    """Send a chat message; the text of the reply (or the refusal) shown for it."""
    bots = page.locator('#chatbot [data-testid="bot"]')
    before = bots.count()
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length > n", arg=before
    )
    page.wait_for_selector('#chatbot [data-testid="status-tracker"].hide', state="attached")
    page.wait_for_timeout(300)
    return bots.last.inner_text()


def reported(server: ServerProcess) -> int:
    """alice's refused message and her report that the filter was wrong, stored as the Chat tab does."""
    store = FeedbackStore(server.data_dir / "playground.db")
    try:
        decision = {**RuleModerator.from_files().moderate(GAME).to_dict(), "action": "refused"}
        conv = store.create_conversation("alice")
        message = store.add_message(conv, "user", GAME, moderation=decision)
        store.hygiene.record_report(message, "alice", "false_positive", note="a game")
        return message
    finally:
        store.close()


def open_queue(page) -> None:
    page.get_by_role("tab", name="Dashboard").click()
    page.locator("#review-queue").get_by_text("Review queue").click()


def test_an_admin_accepts_a_proposal_and_the_filter_changes_without_restart(server, browser):
    message = reported(server)
    alice_ctx, alice = login(browser, server, "alice", ALICE_PW)
    try:
        open_queue(alice)
        alice.wait_for_function(
            "() => (document.querySelector('#review-summary')?.innerText || '').includes('for admins')"
        )
        assert alice.locator("#review-text textarea").input_value() == ""
    finally:
        alice_ctx.close()

    context, page = login(browser, server, "root", ROOT_PW)
    try:
        assert "not sent to the model" in send(page, GAME)  # the built-in rules refuse it
        open_queue(page)
        page.wait_for_function(
            "text => document.querySelector('#review-text textarea')?.value === text", arg=GAME
        )
        assert "violence: pattern 3" in page.locator("#review-rule textarea").input_value()
        diff = page.locator("#review-diff").inner_text()
        assert "moderation.toml (accepted)" in diff and "minecraft" in diff
        page.locator("#review-accept").click()
        page.wait_for_function(
            "() => (document.querySelector('#review-status')?.innerText || '').includes('Accepted')"
        )
        page.wait_for_function(  # the summary is a separate output of the same event: wait, don't race
            "() => (document.querySelector('#review-summary')?.innerText || '').includes('No reports wait')"
        )
        assert "minecraft" in (server.data_dir / "moderation.toml").read_text()

        page.get_by_role("tab", name="Chat").click()
        answer = send(page, GAME)  # the same server process: the message reaches the model now
        # The entry allows this use of "kill" in the question only; a sampled reply that says "kill" in
        # another way is still the output filter's to withhold, so either outcome shows a model reply.
        assert "not sent to the model" not in answer
        assert "Minecraft" in answer or "Reply withheld" in answer, answer
    finally:
        context.close()
    store = FeedbackStore(server.data_dir / "playground.db")
    try:
        assert store.hygiene.get_review(message).decided_by == "root"
        assert message not in store.hygiene.training_excluded_message_ids()
    finally:
        store.close()
