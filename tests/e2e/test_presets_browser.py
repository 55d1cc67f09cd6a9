"""Presets end to end in real Chromium: pick a preset, see its trace, find it stored; edit few-shot
examples; stop a multi-call reply; add notes to the knowledge base; run an attack in the Prompt lab."""

import json
import sqlite3

import pytest

from tests.e2e.test_chat_browser import stats_text, wait_for_reply

pytestmark = pytest.mark.browser


def pick_preset(page, name, preset_id):
    """Choose a preset and wait until its description (and so its controls) are loaded."""
    page.locator("#preset-picker input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(
        "id => (document.querySelector('#preset-description')?.innerText || '').includes('id ' + id)",
        arg=preset_id,
        timeout=20_000,
    )


def send(page, text):
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")


def assistant_rows(db):
    return db.execute(
        "SELECT id, parent_id, content, preset_id, trace, params, prompt, finish_reason FROM messages "
        "WHERE role = 'assistant' ORDER BY id"
    ).fetchall()


def test_a_preset_reply_shows_its_trace_is_stored_with_it_and_retries(server_factory, page):
    server = server_factory()
    db = sqlite3.connect(server.data_dir / "playground.db")
    page.goto(server.url)
    pick_preset(page, "Zero-shot chain-of-thought", "zero-shot-cot")
    assert "Kojima" in page.locator("#preset-description").inner_text()
    send(page, "Sara has 5 boxes with 6 pencils in each box. How many pencils does she have?")
    wait_for_reply(page)
    assert "Zero-shot chain-of-thought: 2 model call(s)" in stats_text(page)

    page.get_by_text("Trace · Zero-shot chain-of-thought").first.click()
    page.get_by_text("Reasoning", exact=False).first.wait_for()
    assert page.get_by_text("Model calls (2)").count() == 1

    rows = assistant_rows(db)
    assert len(rows) == 1
    _, parent, content, preset_id, trace, params, prompt, _ = rows[0]
    assert preset_id == "zero-shot-cot"
    trace = json.loads(trace)
    assert [e["type"] for e in trace].count("model_call") == 2
    reasoning = next(e for e in trace if e["type"] == "thought")
    assert reasoning["text"] in prompt and "Let's think step by step." in prompt
    assert json.loads(params)["temperature"] == 0.0  # the preset's parameters went into the controls
    assert content.strip() in page.locator("#chatbot").inner_text()

    # Retry still addresses the right turn with trace rows in the bubble.
    before = stats_text(page)
    page.locator("#chatbot button[aria-label='Retry']").click()
    wait_for_reply(page, before)
    rows = assistant_rows(db)
    assert len(rows) == 2 and rows[1][1] == parent and rows[1][3] == "zero-shot-cot"
    assert page.get_by_text("Trace · Zero-shot chain-of-thought").count() == 1  # the old reply was replaced


def test_edited_examples_apply_to_the_next_reply_and_stop_ends_a_multi_call_reply(server_factory, page):
    server = server_factory()
    db = sqlite3.connect(server.data_dir / "playground.db")
    page.goto(server.url)
    pick_preset(page, "Few-shot", "few-shot")
    examples = page.locator("#preset-examples textarea")
    assert "Q: What is the capital of Italy?" in examples.input_value()

    examples.fill("Q: What colour is the sky?")  # no answer line: refused, nothing generated
    send(page, "What colour is grass?")
    page.get_by_text("has no 'A:'").first.wait_for()
    assert assistant_rows(db) == []

    examples.fill("Q: What colour is the sky?\nA: Blue, my friend.")
    page.locator("#send-button").click()  # the user message is still waiting for a reply
    wait_for_reply(page)
    rows = assistant_rows(db)
    assert len(rows) == 1 and rows[0][3] == "few-shot"
    assert "Blue, my friend." in rows[0][6] and "capital of Italy" not in rows[0][6]

    pick_preset(page, "Self-consistency (5 votes)", "self-consistency")
    page.locator("#new-conversation").click()
    page.wait_for_function("() => !document.querySelector('#reply-stats').innerText.includes('tokens')")
    send(page, "Write a long story about a dragon who learns to count.")
    page.get_by_text("Trace · Self-consistency").first.wait_for(timeout=60_000)
    page.locator("#stop-button").click()
    page.wait_for_timeout(2000)
    rows = assistant_rows(db)
    assert len(rows) == 2 and rows[1][3] == "self-consistency" and rows[1][7] == "cancelled"
    send(page, "Hello")
    wait_for_reply(page)  # the model instances came back: the next reply works
    assert len(assistant_rows(db)) == 3


def test_knowledge_upload_and_prompt_lab(server_factory, page, tmp_path):
    server = server_factory()
    page.goto(server.url)
    page.get_by_text("Knowledge base (ReAct search tool)").click()
    status = page.locator("#kb-status")
    before = int(status.inner_text().split()[0])
    note = tmp_path / "office.md"
    note.write_text("# Office plant\nThe office plant is a ficus named Gerald.\n")
    page.locator("#kb-upload input[type=file]").set_input_files(str(note))
    page.wait_for_function(
        "n => parseInt(document.querySelector('#kb-status').innerText) === n", arg=before + 1, timeout=30_000
    )
    assert (server.data_dir / "knowledge" / "office.md").exists()

    page.get_by_role("tab", name="Prompt lab").click()
    page.locator("#lab-attack input").click()
    page.get_by_role("option", name="Prompt leaking").click()
    page.wait_for_function(
        "() => document.querySelector('#lab-payload textarea').value.includes('system prompt')",
        timeout=10_000,
    )
    page.locator("#lab-run").click()
    for column in ("plain", "defended"):
        page.wait_for_function(
            f"() => (document.querySelector('#lab-{column}-verdict')?.innerText || '').includes('Attack')",
            timeout=120_000,
        )
        assert page.locator(f"#lab-{column}-output").inner_text().strip()
