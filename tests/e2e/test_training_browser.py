"""In Chromium: "Run training now" starts a cycle whose run shows up with its progress; when the
candidate passes the (lenient) gate, the server swaps to it and the next chat reply records it."""

import pytest

from feedback_store.store import FeedbackStore
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
        "--version-poll-s",
        "0.5",
        data_dir=data,
    )
    page.goto(server.url)
    page.get_by_role("tab", name="Training").click()
    status = page.locator("#training-status")
    status.get_by_text("DPO loss robust, label smoothing 0.1").wait_for()  # the flags reach the tab ...
    page.locator("#training-run-now").click()
    # The run appears in the table while it runs, with its stage and progress in the status line.
    page.wait_for_function(
        "() => document.querySelector('#training-status')?.innerText.includes('Running: run 1')",
        timeout=60_000,
    )
    assert "stage" in page.locator("#training-status").inner_text()
    page.wait_for_function(
        "() => document.querySelector('#training-runs')?.innerText.includes('running')", timeout=30_000
    )
    # ... and finishes with the gate's decision.
    page.wait_for_function(
        "() => document.querySelector('#training-runs')?.innerText.includes('deployed')", timeout=600_000
    )
    assert "win rate" in page.locator("#training-runs").inner_text()
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
