"""The Training tab shows the latest gate decision with its evidence: each check's estimate, interval
and verdict, undecided included."""

from __future__ import annotations

from feedback_store.runs import TrainingRun
from playground.training import gate_markdown, runs_table


def run(run_id: int, decision: str | None, checks: list | None) -> TrainingRun:
    return TrainingRun(
        id=run_id,
        trigger="schedule",
        status="succeeded",
        stage="deploy",
        progress=1.0,
        started_at="2026-12-01T10:00:00+00:00",
        updated_at="2026-12-01T10:05:00+00:00",
        decision=decision,
        candidate_version_id=7,
        reasons=["undecided: needs more evidence (win rate)"],
        metrics={"method": "dpo", **({"gate_checks": checks} if checks else {})},
    )


def test_the_latest_decision_and_its_intervals_are_shown():
    checks = [
        {
            "name": "win rate",
            "verdict": "inconclusive",
            "estimate": 0.56,
            "low": 0.44,
            "high": 0.69,
            "n": 32,
            "threshold": 0.5,
        },
        {
            "name": "facts",
            "verdict": "pass",
            "estimate": -0.01,
            "low": -0.04,
            "high": 0.0,
            "n": 74,
            "threshold": -0.1,
        },
    ]
    text = gate_markdown([run(3, None, None), run(2, "undecided", checks), run(1, "deployed", checks)])
    assert "run 2: undecided" in text and "candidate v7" in text
    assert "| win rate | inconclusive | 0.56 | 0.44 – 0.69 | 32 | 0.50 |" in text
    assert gate_markdown([run(1, None, None)]) == ""
    assert runs_table([run(2, "undecided", checks)])[0][7] == "undecided"
