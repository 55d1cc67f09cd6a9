"""Script payloads in real Chromium: typed as user messages and coming back as model replies (the echo
model repeats them), they must stay inert everywhere user text is rendered: the Chat tab (messages,
replies, the feedback panel's preview), Compare, Rank, the Prompt lab and the Dashboard's tables.
Inert means: ``window.__xss`` stays undefined, no dialog opens, and no element in the page carries an
event-handler attribute or a javascript: URL."""

from __future__ import annotations

from importlib import resources

import pytest

from feedback_store.store import AssistantTurn, FeedbackStore
from tests.conftest import ServerProcess
from tests.e2e.echo_model import EchoModelServer
from tests.e2e.test_chat_browser import wait_for_reply

pytestmark = pytest.mark.browser

PAYLOADS = [
    line
    for line in resources.files("benchmarks").joinpath("tasks", "xss_payloads.txt").read_text().splitlines()
    if line.strip()
]
ALL = "\n\n".join(PAYLOADS)
DOM_CHECK = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const v = (a.value || '').trim().toLowerCase();
      if (a.name.startsWith('on') || (/^(href|src|action|formaction|data|xlink:href)$/.test(a.name) && v.startsWith('javascript:')))
        bad.push(el.tagName + ' ' + a.name + '=' + a.value.slice(0, 60));
    }
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def echo():
    server = EchoModelServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(echo, tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("xss"), "--model", echo.url, "--concurrency", "4")
    yield s.wait_ready()
    s.stop()


def assert_inert(page, dialogs, where: str) -> None:
    page.mouse.move(300, 300)  # over the x-widget payload, if it were live
    page.mouse.move(600, 500)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") is None, where
    assert dialogs == [], where
    assert page.evaluate(DOM_CHECK) == [], where


def test_payloads_stay_inert_in_every_tab(server, page):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.url)

    # Chat: each payload as its own message; the echo model sends it back as the reply.
    box = page.locator("#chat-input textarea")
    previous = ""
    for payload in PAYLOADS:
        box.fill(payload)
        box.press("Enter")
        wait_for_reply(page, previous)
        previous = page.locator("#reply-stats").inner_text()
    assert page.locator('#chatbot [data-testid="bot"]').count() == len(PAYLOADS)
    assert "click me" in page.locator("#chatbot").inner_text()  # shown as text, not run
    page.get_by_text("Rate this reply").click()
    page.wait_for_function(
        "() => (document.querySelector('#feedback-target')?.innerText || '').includes('Rating')"
    )
    assert_inert(page, dialogs, "chat")

    # Compare: both replies echo every payload at once.
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-input textarea").fill(ALL)
    page.locator("#compare-go").click()
    page.wait_for_function(
        "() => (document.querySelector('#compare-result')?.innerText || '').includes('Which reply is better')",
        timeout=60_000,
    )
    assert_inert(page, dialogs, "compare")

    # Rank: K replies in text boxes.
    page.get_by_role("tab", name="Rank").click()
    page.locator("#rank-input textarea").fill(ALL)
    page.locator("#rank-go").click()
    page.wait_for_function(
        "() => (document.querySelector('#rank-status')?.innerText || '').includes('Rank the')", timeout=60_000
    )
    assert_inert(page, dialogs, "rank")

    # Prompt lab: the payload as the attack text, the replies rendered as Markdown.
    page.get_by_role("tab", name="Prompt lab").click()
    page.locator("#lab-payload textarea").fill(ALL)
    page.locator("#lab-markers textarea").fill('<img src=x onerror="window.__xss=99">')
    page.locator("#lab-run").click()
    page.wait_for_function(
        "() => (document.querySelector('#lab-defended-verdict')?.innerText || '').includes('Attack')",
        timeout=60_000,
    )
    assert "click me" in page.locator("#lab-plain-output").inner_text()
    assert_inert(page, dialogs, "lab")

    # Dashboard: a model version whose name is a payload, in a leaderboard table and plot.
    store = FeedbackStore(server.data_dir / "playground.db")
    try:
        with store.write() as db:
            evil = db.execute(
                "INSERT INTO model_versions (name, base_model, status, created_at) VALUES (?, 'x', 'retired', '2026')",
                [PAYLOADS[1]],
            ).lastrowid
        conv = store.create_conversation("tester")
        u = store.add_message(conv, "user", PAYLOADS[0])
        a = store.add_assistant_message(conv, u, AssistantTurn(content=PAYLOADS[2], model_version_id=1))
        b = store.add_assistant_message(conv, u, AssistantTurn(content=PAYLOADS[3], model_version_id=evil))

        store.feedback.record_comparison(a, b, "tester", "b", mode="versions")
    finally:
        store.close()
    page.get_by_role("tab", name="Dashboard").click()
    page.wait_for_function(
        "() => (document.querySelector('#board-versions')?.innerText || '').includes('onerror')",
        timeout=60_000,
    )
    assert_inert(page, dialogs, "dashboard")
