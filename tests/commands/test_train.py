"""``python launch.py train`` as a user runs it: a subprocess on a small store, then what it stored.

``--cycle`` must run what the scheduler runs: the same CycleConfig from the same settings, the gate's
decision and reasons in the ``training_runs`` row, every stage timed, a progress bar on the terminal.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from feedback_store.store import FeedbackStore
from settings import Settings
from tests.conftest import ROOT
from tests.trainers.conftest import seed_feedback
from tests.trainers.test_cycle import _embedded_name, data_dir_with_base
from trainers.cycle import CycleConfig

pytestmark = pytest.mark.slow

# A lenient gate and two optimiser steps: the test is about the command, not about the model's quality.
QUICK = [
    "--train-max-steps", "2", "--train-threads", "2",
    "--gate-eval-prompts", "2", "--gate-facts", "2", "--gate-refusals", "1", "--gate-max-new-tokens", "16",
    "--gate-min-win-rate", "0", "--gate-kl-budget", "1000", "--gate-max-regressions", "99",
]  # fmt: skip


def train(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:
    """The command's JSON summary: the last object printed (training libraries print their own logs)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


@pytest.fixture
def data(tmp_path, hf_base_dir):
    data = data_dir_with_base(tmp_path / "data", hf_base_dir)
    store = FeedbackStore(data / "playground.db")
    seed_feedback(store)
    store.close()
    return data


def test_train_cycle_runs_the_schedulers_cycle_and_stores_its_decision(data):
    r = train("--cycle", "--data-dir", str(data), *QUICK)
    assert r.returncode == 0, r.stderr[-3000:]
    outcome = last_json(r.stdout)
    store = FeedbackStore(data / "playground.db")
    try:
        (run,) = store.runs.recent()
        assert run.trigger == "cli" and run.status == "succeeded", run
        assert run.decision == outcome["decision"] == "deployed" and run.reasons == outcome["reasons"]
        assert any("win rate" in reason for reason in run.reasons)
        assert set(run.stage_seconds) >= {"export", "reward", "policy", "evaluate", "deploy"}
        assert run.progress == pytest.approx(1.0)
        # exactly the scheduler's configuration: what the server builds from the same flags
        expected = CycleConfig.from_settings(Settings(_cli_parse_args=["--data-dir", str(data), *QUICK]))
        assert run.config == json.loads(json.dumps(expected.to_dict()))
        candidate = store.versions.get(run.candidate_version_id)
        assert candidate.status == "deployed" and store.versions.deployed(_embedded_name()).id == candidate.id
        assert {"win_rate", "kl_to_base"} <= set(candidate.metrics)
    finally:
        store.close()
    assert "100%" in r.stderr and "evaluate" in r.stderr  # the progress bar went through every stage


def test_train_one_method_registers_a_candidate(data):
    r = train("--method", "dpo", "--data-dir", str(data), "--max-steps", "2", "--eval-prompts", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = last_json(r.stdout)
    store = FeedbackStore(data / "playground.db")
    try:
        version = store.versions.get(summary["version_id"])
        assert version.status == "candidate" and version.method == "dpo"
        assert version.adapter_path == summary["adapter"] and summary["gguf_adapter"].endswith("adapter.gguf")
        assert store.runs.recent() == []  # one method is not a cycle
    finally:
        store.close()
    assert "dpo" in r.stderr and "100%" in r.stderr


def test_train_without_a_mode_or_data_says_what_to_do(tmp_path):
    r = train("--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "--method METHOD, or --cycle" in r.stderr
    r = train("--method", "dpo", "--data-dir", str(tmp_path), timeout=300)
    assert r.returncode == 3 and "not enough data" in r.stderr and "Traceback" not in r.stderr
    r = train("--method", "nonsense", "--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "--method" in r.stderr and "Traceback" not in r.stderr
