"""The history sidebar in real Chromium, with the echo model (its reply is the message: fast and exact).

Without logins: chat, reload the page, the conversation is in the sidebar (the browser's key survived
in localStorage), restoring it shows the messages and the next message continues it in the store;
rename; delete with its confirmation, and the store, the exports and the next training dataset no
longer hold it. With two logins: each sees only their own conversations, in the page and in the
list's data, and cannot open the other's by sending its id."""

from __future__ import annotations

import sqlite3

import pytest

from feedback_store import datasets, exports
from feedback_store.store import FeedbackStore
from tests.conftest import ServerProcess
from tests.e2e.echo_model import EchoModelServer
from tests.e2e.test_chat_browser import wait_for_reply

pytestmark = pytest.mark.browser

ALICE_PW = "alice-hist-Pa55-8c1"
BOB_PW = "bob-hist-Pa55-3d9"


@pytest.fixture(scope="module")
def echo():
    server = EchoModelServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def anonymous(echo, tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("history"), "--model", echo.url, "--no-scheduler")
    yield s.wait_ready()
    s.stop()


@pytest.fixture(scope="module")
def logins(echo, tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory.mktemp("history-logins"),
        "--model",
        echo.url,
        "--no-scheduler",
        "--auth",
        f"alice:{ALICE_PW}",
        "--auth",
        f"bob:{BOB_PW}",
    )
    yield s.wait_ready()
    s.stop()


def send(page, text: str) -> None:
    previous = page.locator("#reply-stats").inner_text()
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")
    wait_for_reply(page, previous)


def sidebar(page) -> list[str]:
    """The titles listed, in order (each label is 'title · date · version')."""
    page.wait_for_timeout(300)
    return [t.split(" · ")[0] for t in page.locator("#history-list label").all_inner_texts()]


def wait_listed(page, title: str) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('#history-list label')].some(l => l.innerText.startsWith(t))",
        arg=title,
        timeout=30_000,
    )


def messages(db_path, conversation_id=None) -> list[tuple]:
    db = sqlite3.connect(db_path)
    try:
        if conversation_id is None:
            return db.execute(
                "SELECT conversation_id, parent_id, role, content, id FROM messages ORDER BY id"
            ).fetchall()
        return db.execute(
            "SELECT conversation_id, parent_id, role, content, id FROM messages WHERE conversation_id = ? ORDER BY id",
            [conversation_id],
        ).fetchall()
    finally:
        db.close()


def test_chat_reload_resume_rename_delete(anonymous, page, tmp_path):
    db_path = anonymous.data_dir / "playground.db"
    page.goto(anonymous.url)
    page.wait_for_selector("#history-count")
    send(page, "Tell me about the Loire castles")
    wait_listed(page, "Tell me about the Loire castles")
    page.locator("#new-conversation").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"bot\"]')")
    send(page, "Second topic: volcanoes")
    wait_listed(page, "Second topic: volcanoes")
    assert sidebar(page) == ["Second topic: volcanoes", "Tell me about the Loire castles"]

    # A reload is a new Gradio session: the browser's key (localStorage) still finds both.
    page.reload()
    wait_listed(page, "Tell me about the Loire castles")
    assert sidebar(page) == ["Second topic: volcanoes", "Tell me about the Loire castles"]
    assert page.locator('#chatbot [data-testid="bot"]').count() == 0
    page.locator("#history-list label", has_text="Tell me about the Loire castles").click()
    page.wait_for_function(
        "() => (document.querySelector('#chatbot')?.innerText || '').includes('Loire castles')"
    )
    assert page.locator('#chatbot [data-testid="user"]').count() == 1
    assert page.locator("#history-title textarea, #history-title input").first.input_value() == (
        "Tell me about the Loire castles"
    )
    loire = messages(db_path)[0][0]
    before = messages(db_path, loire)
    send(page, "And the gardens of Villandry?")  # continues the restored conversation
    after = messages(db_path, loire)
    assert len(after) == len(before) + 2 and after[-2][1] == before[-1][4]  # parent: its last reply
    page.wait_for_timeout(500)
    assert sidebar(page)[0] == "Tell me about the Loire castles"  # the most recent activity first
    assert len(sidebar(page)) == 2

    # Rename (titles are the user's text: shown as text, not markup).
    title = page.locator("#history-title textarea, #history-title input").first
    title.fill("Castles <b>trip</b>")
    page.locator("#history-rename").click()
    wait_listed(page, "Castles <b>trip</b>")
    assert page.locator("#history-list b").count() == 0
    page.reload()
    wait_listed(page, "Castles <b>trip</b>")

    # Search by text of any message.
    search = page.locator("#history-search textarea, #history-search input").first
    search.fill("villandry")
    search.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#history-list label').length === 1")
    assert sidebar(page) == ["Castles <b>trip</b>"]
    search.fill("")
    search.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#history-list label').length === 2")

    # Delete asks first; "No" keeps it, "Yes" removes it everywhere.
    page.locator("#history-list label", has_text="Castles").click()
    page.wait_for_function(
        "() => (document.querySelector('#chatbot')?.innerText || '').includes('Villandry')"
    )
    page.locator("#history-delete").click()
    page.locator("#history-delete-no").click()
    assert len(sidebar(page)) == 2
    page.locator("#history-delete").click()
    page.locator("#history-delete-yes").click()
    page.wait_for_function("() => document.querySelectorAll('#history-list label').length === 1")
    assert sidebar(page) == ["Second topic: volcanoes"]
    assert page.locator('#chatbot [data-testid="user"]').count() == 0

    assert all(m[0] != loire for m in messages(db_path))
    store = FeedbackStore(db_path)
    try:
        for fmt in exports.FORMATS:
            exports.export(store, fmt, tmp_path / f"{fmt}.jsonl")
            assert "Loire" not in (tmp_path / f"{fmt}.jsonl").read_text(), fmt
        assert "volcanoes" in (tmp_path / "raw.jsonl").read_text()
        prompts = datasets.prompts(store)
        assert prompts and all("Loire" not in str(p.prompt) for p in prompts)
    finally:
        store.close()


def get_text(page, url: str, tries: int = 3) -> str:
    """GET with the page's cookies. The request context may reuse a keep-alive connection the server
    has just closed (uvicorn closes idle ones after 5 s): that read fails with ECONNRESET, so retry."""
    from playwright.sync_api import Error

    for attempt in range(tries):
        try:
            response = page.request.get(url)
            assert response.ok, (response.status, url)
            return response.text()
        except Error:
            if attempt == tries - 1:
                raise
            page.wait_for_timeout(500)
    raise AssertionError("unreachable")


def login(browser, server: ServerProcess, user: str, password: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    r = context.request.post(server.url + "login", form={"username": user, "password": password})
    assert r.ok, r.text()
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.wait_for_selector("#history-count")
    return context, page


def test_two_logins_never_see_each_others_conversations(logins, browser):
    alice_ctx, alice = login(browser, logins, "alice", ALICE_PW)
    bob_ctx, bob = login(browser, logins, "bob", BOB_PW)
    try:
        send(alice, "Alice's private plans")
        wait_listed(alice, "Alice's private plans")
        send(bob, "Bob's own question")
        wait_listed(bob, "Bob's own question")
        bob.reload()
        wait_listed(bob, "Bob's own question")
        assert sidebar(bob) == ["Bob's own question"]
        assert "Alice" not in bob.content()
        alice.reload()
        wait_listed(alice, "Alice's private plans")
        assert sidebar(alice) == ["Alice's private plans"]
        assert "Bob" not in alice.content()
        # bob searches for alice's words: nothing
        search = bob.locator("#history-search textarea, #history-search input").first
        search.fill("private plans")
        search.press("Enter")
        bob.wait_for_function("() => document.querySelectorAll('#history-list label').length === 0")
        # "My data" holds bob's words and none of alice's
        bob.locator("#my-data").click()
        bob.locator("#my-data-download").click()
        link = bob.locator("#my-data-file a[href]").first
        link.wait_for()
        body = get_text(bob, link.get_attribute("href"))
        assert "Bob's own question" in body and "Alice" not in body
        # and in a fresh browser (another device), alice's history is still hers
        again_ctx, again = login(browser, logins, "alice", ALICE_PW)
        try:
            wait_listed(again, "Alice's private plans")
        finally:
            again_ctx.close()
    finally:
        alice_ctx.close()
        bob_ctx.close()
