"""In Chromium: "Run training now" starts a cycle whose run shows up with its progress; the candidate
passes the (lenient) gate and goes on canary: the Compare tab's anonymous battles pit it against the
deployed version, the Training tab shows the users' tally, and when the votes' budget is spent the
gate's decision stands: the server swaps to it and the next chat reply records it."""

import pytest

from feedback_store.store import FeedbackStore
from tests.e2e.test_feedback_browser import wait_for_text
from tests.trainers.conftest import seed_feedback
from tests.trainers.test_cycle import data_dir_with_base

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_run_now_shows_the_run_and_its_progress_then_serves_the_new_version(
    server_factory, page, tmp_path, hf_base_dir
):
    data = data_dir_with_base(tmp_path / "data", hf_base_dir)
    store = FeedbackStore(data / "playground.db")
    seed_feedback(store)
    store.close()
    server = server_factory(
        "--train-every",
        "0",
        "--train-max-steps",
        "2",
        "--train-method",
        "dpo",
        "--dpo-loss",
        "robust",
        "--label-smoothing",
        "0.1",
        "--train-threads",
        "2",
        "--gate-min-win-rate",
        "0",
        "--gate-kl-budget",
        "1000",
        "--gate-max-regressions",
        "99",
        "--gate-eval-prompts",
        "2",
        "--gate-facts",  # a small gate: the browser flow is under test, not the gate's statistics
        "4",
        "--gate-refusals",
        "1",
        "--gate-max-new-tokens",
        "16",
        "--version-poll-s",
        "0.5",
        "--canary-share",
        "1",
        "--canary-votes",
        "2",
        data_dir=data,
    )
    page.goto(server.url)
    page.get_by_role("tab", name="Training").click()
    status = page.locator("#training-status")
    status.get_by_text("DPO loss robust, label smoothing 0.1").wait_for()  # the flags reach the tab ...
    page.locator("#training-run-now").click()
    # The run appears in the table while it runs, with its stage and progress in the status line (one
    # read of both: between two refreshes the line shows Gradio's "processing" instead).
    page.wait_for_function(
        "() => { const t = document.querySelector('#training-status')?.innerText || '';"
        " return t.includes('Running: run 1') && t.includes('stage'); }",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => document.querySelector('#training-runs')?.innerText.includes('running')", timeout=30_000
    )
    # ... and finishes with the gate's decision.
    page.wait_for_function(
        "() => document.querySelector('#training-runs')?.innerText.includes('canary')", timeout=600_000
    )
    assert "win rate" in page.locator("#training-runs").inner_text()
    wait_for_text(page, "#training-canary", "Canary 1 live: candidate v2 against deployed v1")
    assert "votes left" in page.locator("#training-canary").inner_text()

    # Two anonymous battles in the Compare tab: both are canary battles (share 1), names after the vote.
    page.get_by_role("tab", name="Compare").click()
    for prompt in ("Name a colour.", "Name a fruit."):
        page.locator("#compare-input textarea").fill(prompt)
        page.locator("#compare-go").click()
        # the previous battle's vote buttons stay enabled (a vote can be changed): wait for this one's
        wait_for_text(page, "#compare-result", "Which reply is better?", timeout=120_000)
        page.wait_for_selector("#vote-a:not([disabled])", timeout=10_000)
        page.locator("#vote-a").click()
        wait_for_text(page, "#compare-result", "Model A was")
        result = page.locator("#compare-result").inner_text()
        assert "(candidate)" in result and "(deployed)" in result
    # Two decisive votes spend the budget without a clear winner: the gate's "deploy" stands.
    page.get_by_role("tab", name="Training").click()
    wait_for_text(page, "#training-canary", "Canary 1 ended: deployed", timeout=90_000)
    assert "vote budget of 2 spent" in page.locator("#training-canary").inner_text()
    page.wait_for_function(
        "() => document.querySelector('#training-runs')?.innerText.includes('deployed')", timeout=30_000
    )
    store = FeedbackStore(data / "playground.db")
    try:  # ... and the cycle: robust DPO trained the candidate
        run = store.runs.recent()[0]
        assert (run.config["dpo_loss"], run.config["label_smoothing"]) == ("robust", 0.1)
        candidate = store.versions.get(run.candidate_version_id)
        assert (candidate.metrics["loss_type"], candidate.metrics["label_smoothing"]) == ("robust", 0.1)
    finally:
        store.close()
    # The server hot-swapped: a new chat reply is written by version 2.
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_timeout(1500)
    box = page.locator("#chat-input textarea")
    box.fill("Say hello.")
    box.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('#reply-stats')?.innerText || '').includes('tokens')", timeout=60_000
    )
    assert "version 2" in page.locator("#reply-stats").inner_text()
