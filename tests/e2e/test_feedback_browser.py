"""End to end in real Chromium: every kind of feedback a user gives lands in SQLite exactly once,
however often the event fires: thumbs with a reason, a 1-7 score with flags, a better answer, an A/B
vote, a K=4 ranking."""

import json
import sqlite3

import pytest

from feedback_store import datasets
from feedback_store.store import FeedbackStore
from tests.conftest import ServerProcess
from tests.e2e.test_chat_browser import wait_for_reply

pytestmark = pytest.mark.browser
BETTER = "Paris: it has been the capital of France since the year 987."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("feedback-e2e"))
    try:
        yield s.wait_ready()
    finally:
        s.stop()


def db_of(server):
    return sqlite3.connect(server.data_dir / "playground.db")


def wait_for_text(page, selector: str, text: str, timeout: int = 60_000):
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )


def test_thumbs_reason_score_flags_and_better_answer_are_stored_once(server, page):
    page.goto(server.url)
    page.locator("#chat-input textarea").fill("What is the capital of France?")
    page.locator("#chat-input textarea").press("Enter")
    wait_for_reply(page)
    db = db_of(server)
    reply_id = db.execute("SELECT id FROM messages WHERE role = 'assistant' ORDER BY id DESC").fetchone()[0]

    # Quick reason under the reply (Gradio fires this event twice: FACTS.md).
    page.locator("#chatbot button[aria-label='Feedback']").hover()
    page.locator("#chatbot button.extra-feedback-option", has_text="Too long").click(force=True)
    page.wait_for_timeout(1500)  # let both events arrive
    rows = db.execute("SELECT message_id, thumbs, reasons FROM feedback").fetchall()
    assert rows == [(reply_id, -1, '["too_long"]')]

    # The panel: it targets the reply just rated and shows what is stored.
    page.get_by_text("Rate this reply").click()
    wait_for_text(page, "#feedback-target", "Rating the reply")
    page.locator("#feedback-reasons-down label", has_text="Incorrect").click()
    page.locator("#feedback-score label", has_text="3").click()
    page.locator("#feedback-flags label", has_text="Gives harmful advice").click()
    page.locator("#feedback-flags label", has_text="Expresses moral judgment").click()
    page.locator("#feedback-note textarea").fill("Wrong city.")
    page.locator("#feedback-better textarea").fill(BETTER)
    for _ in range(2):  # saving twice changes nothing
        page.locator("#feedback-save").click()
        wait_for_text(page, "#feedback-status", "Saved")
        page.wait_for_timeout(500)

    rows = db.execute(
        "SELECT message_id, user_id, thumbs, reasons, score, flags, note FROM feedback"
    ).fetchall()
    assert len(rows) == 1
    message_id, user_id, thumbs, reasons, score, flags, note = rows[0]
    assert (message_id, thumbs, score, note) == (reply_id, -1, 3, "Wrong city.")
    assert json.loads(reasons) == ["incorrect", "too_long"]
    assert json.loads(flags) == ["harmful_advice", "moral_judgment"]
    assert user_id.startswith("anon-")
    demos = db.execute("SELECT message_id, user_id, content FROM demonstrations").fetchall()
    assert demos == [(reply_id, user_id, BETTER)]


def test_ab_vote_is_stored_once_and_names_are_revealed(server, page):
    page.goto(server.url)
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-input textarea").fill("Name a colour.")
    page.locator("#compare-go").click()
    page.wait_for_selector("#vote-a:not([disabled])", timeout=120_000)
    assert "Model A" in page.locator("#compare-a").inner_text()  # anonymous until the vote
    for _ in range(2):  # a double click is one vote
        page.locator("#vote-a").click()
    wait_for_text(page, "#compare-result", "Model A was")
    assert "seed" in page.locator("#compare-result").inner_text()  # the names are revealed
    page.wait_for_timeout(500)

    db = db_of(server)
    rows = db.execute(
        "SELECT message_a, message_b, vote, mode, anonymous, label_a, differed FROM comparisons"
    ).fetchall()
    assert len(rows) == 1
    a, b, vote, mode, anonymous, label_a, differed = rows[0]
    assert (vote, mode, anonymous) == ("a", "samples", 1) and "seed" in label_a
    assert "params.seed" in json.loads(differed)
    conv = db.execute("SELECT conversation_id FROM messages WHERE id = ?", [a]).fetchone()[0]
    assert db.execute("SELECT source FROM conversations WHERE id = ?", [conv]).fetchone()[0] == "compare"
    roles = db.execute("SELECT role FROM messages WHERE conversation_id = ? ORDER BY id", [conv]).fetchall()
    assert [r[0] for r in roles] == ["user", "assistant", "assistant"]


def pick(page, index: int, rank: int):
    page.locator(f"#rank-pos-{index} input").click()
    page.locator(f"#rank-pos-{index} li[role=option][aria-label='{rank}']").click()


def test_k4_ranking_is_validated_and_stored_once(server, page):
    page.goto(server.url)
    page.get_by_role("tab", name="Rank").click()
    page.locator("#rank-input textarea").fill("Write a short poem about the sea.")
    page.locator("#rank-go").click()
    page.wait_for_selector("#rank-save:not([disabled])", timeout=180_000)
    assert page.locator("#rank-reply-3").is_visible() and not page.locator("#rank-reply-4").is_visible()

    for i, r in [(0, 1), (2, 3), (3, 4)]:  # reply 2 left without a rank: refused server-side
        pick(page, i, r)
    page.locator("#rank-save").click()
    wait_for_text(page, "#rank-saved", "Not saved")
    assert "Give every reply a rank" in page.locator("#rank-saved").inner_text()
    db = db_of(server)
    assert db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0] == 0

    pick(page, 1, 2)
    for _ in range(2):
        page.locator("#rank-save").click()
        wait_for_text(page, "#rank-saved", "Ranking saved")
    page.wait_for_timeout(500)
    assert db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM ranking_items").fetchone()[0] == 4
    shown = [page.locator(f"#rank-reply-{i} textarea").input_value() for i in range(4)]
    store = FeedbackStore(server.data_dir / "playground.db")
    try:
        pairs = datasets.preference_pairs(store, sources=["ranking"])
    finally:
        store.close()
    distinct = sum(shown[i] != shown[j] for i in range(4) for j in range(i + 1, 4))
    assert len(pairs) == distinct  # 6 unless two samples came out identical (those pairs teach nothing)
    assert (
        pairs[0].chosen == shown[0] and pairs[0].rejected == shown[1]
    )  # reply 1 ranked first, reply 2 second
    assert all(p.weight == pytest.approx(1 / 6) for p in pairs)

    # Ties are allowed (InstructGPT's y_D > y_C > y_A = y_B): replies 1 and 2 share rank 1.
    pick(page, 1, 1)
    page.locator("#rank-save").click()
    wait_for_text(page, "#rank-saved", "5 preference pairs (tied replies give none)")
    assert db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0] == 1
    ranks = db.execute("SELECT rank FROM ranking_items ORDER BY position").fetchall()
    assert [r[0] for r in ranks] == [1, 1, 2, 3]
