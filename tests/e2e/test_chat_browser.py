"""End to end in real Chromium: type, watch the reply stream in, find both messages in SQLite."""

import re
import sqlite3

import pytest

pytestmark = pytest.mark.browser


def stats_text(page) -> str:
    return page.locator("#reply-stats").inner_text()


def wait_for_reply(page, previous_stats: str = ""):
    """Streaming is over when the reply's statistics line appears (or changes)."""
    page.wait_for_timeout(300)
    page.wait_for_selector('#chatbot [data-testid="status-tracker"].hide', state="attached", timeout=60_000)
    page.wait_for_function(
        "prev => { const t = document.querySelector('#reply-stats')?.innerText || '';"
        " return t.includes('tokens') && t !== prev; }",
        arg=previous_stats,
        timeout=60_000,
    )


def test_chat_turn_is_shown_and_stored(server_factory, page):
    server = server_factory()
    page.goto(server.url)
    box = page.locator("#chat-input textarea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    wait_for_reply(page)
    bot_messages = page.locator('#chatbot [data-testid="bot"]')
    assert bot_messages.count() == 1
    reply_text = bot_messages.first.inner_text()
    assert reply_text.strip()
    stats = page.locator("#reply-stats").inner_text()
    assert "first token" in stats and "version 1" in stats

    db = sqlite3.connect(server.data_dir / "playground.db")
    rows = db.execute(
        "SELECT role, content, model_version_id, ttft_ms, tokens_per_s, prompt, params FROM messages ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[0][1] == "What is the capital of France?"
    role, content, version, ttft_ms, tok_s, prompt, params = rows[1]
    # The page renders the stored Markdown (**bold** shows as bold): compare without its markers.
    assert re.sub(r"[*_`#]", "", content).split() == re.sub(r"[*_`#]", "", reply_text).split()
    assert version == 1
    assert ttft_ms > 0 and (tok_s is None or tok_s > 0)
    assert "What is the capital of France?" in prompt and '"temperature"' in params


def test_stop_keeps_the_partial_reply_and_new_conversation_starts_fresh(server_factory, page):
    server = server_factory()
    page.goto(server.url)
    page.locator("#chat-input textarea").fill("Write a very long story about a dragon and a knight.")
    page.locator("#chat-input textarea").press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('#chatbot [data-testid=\"bot\"]')?.innerText || '').length > 20",
        timeout=60_000,
    )
    page.locator("#stop-button").click()
    page.wait_for_timeout(1500)
    db = sqlite3.connect(server.data_dir / "playground.db")
    row = db.execute("SELECT content, finish_reason FROM messages WHERE role='assistant'").fetchone()
    assert row is not None and row[1] == "cancelled" and len(row[0]) > 0

    page.locator("#new-conversation").click()
    page.wait_for_timeout(500)
    assert page.locator('#chatbot [data-testid="bot"]').count() == 0
    page.locator("#chat-input textarea").fill("Hello")
    page.locator("#chat-input textarea").press("Enter")
    wait_for_reply(page)
    conversations = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    assert conversations == 2


def test_empty_message_is_refused_and_nothing_is_stored(server_factory, page):
    server = server_factory()
    page.goto(server.url)
    page.locator("#chat-input textarea").fill("   ")
    page.locator("#send-button").click()
    page.wait_for_timeout(1500)
    db = sqlite3.connect(server.data_dir / "playground.db")
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert page.get_by_text("Type a message first").count() >= 1


def test_retry_edit_and_undo_branch_the_stored_conversation(server_factory, page):
    server = server_factory()
    db = sqlite3.connect(server.data_dir / "playground.db")
    page.goto(server.url)
    page.locator("#chat-input textarea").fill("Name a fruit.")
    page.locator("#chat-input textarea").press("Enter")
    wait_for_reply(page)

    # Retry: a second reply under the same user message.
    before = stats_text(page)
    page.locator("#chatbot button[aria-label='Retry']").click()
    wait_for_reply(page, before)
    rows = db.execute("SELECT id, role, parent_id FROM messages ORDER BY id").fetchall()
    assert [r[1] for r in rows] == ["user", "assistant", "assistant"]
    assert rows[1][2] == rows[2][2] == rows[0][0]
    assert page.locator('#chatbot [data-testid="bot"]').count() == 1

    # Edit the user message: a sibling user message (same parent: none) and a fresh reply to it.
    before = stats_text(page)
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    page.locator("#chatbot textarea.edit-textarea").fill("Name a vegetable.")
    page.get_by_role("button", name="Submit").click()
    wait_for_reply(page, before)
    rows = db.execute("SELECT id, role, content, parent_id FROM messages ORDER BY id").fetchall()
    assert rows[3][1:] == ("user", "Name a vegetable.", None)
    assert rows[4][1] == "assistant" and rows[4][3] == rows[3][0]
    assert "Name a vegetable." in page.locator("#chatbot").inner_text()

    # Undo: the exchange leaves the screen, its text returns to the input box, the rows stay stored.
    page.locator("#chatbot button[aria-label='Undo']").click()
    page.wait_for_function(
        "() => document.querySelector('#chat-input textarea').value === 'Name a vegetable.'", timeout=20_000
    )
    assert page.locator('#chatbot [data-testid="bot"]').count() == 0
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 5
