"""The scheduler as the server runs it: cycles in a child process, one at a time, and a killed cycle
leaves the deployed version serving while the next cycle still runs."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from feedback_store.runs import RunInProgress
from feedback_store.store import FeedbackStore
from settings import TrainingSettings as SchedulerConfig
from tests.trainers.conftest import seed_feedback
from tests.trainers.test_cycle import _embedded_name, cycle_config, data_dir_with_base
from trainers.scheduler import TrainingScheduler

pytestmark = pytest.mark.slow


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def no_data_config(data):
    """A cycle that ends quickly with 'no candidate' (it needs more feedback than exists)."""
    return cycle_config(data, method="auto", min_pairs=10**6, min_unpaired=10**6)


def test_two_triggers_at_once_run_one_cycle(tmp_path, hf_base_dir):
    data = data_dir_with_base(tmp_path, hf_base_dir)
    scheduler = TrainingScheduler(SchedulerConfig(every=0, nice=0), no_data_config(data))
    scheduler.start()
    try:
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(scheduler._job("manual"))) for _ in range(3)
        ]
        for t in threads:
            t.start()
        message = scheduler.trigger_now("ui")
        for t in threads:
            t.join(timeout=300)
        runs = scheduler.runs.recent()
        assert len(runs) == 1, runs
        assert sum(r is not None for r in results) <= 1
        assert runs[0].status == "succeeded" and runs[0].decision == "no_candidate"
        assert "not enough feedback" in runs[0].reasons[0]
        assert message  # either "starting" (and it was skipped) or "already running"
        # and across processes: the database refuses a second running row
        store = FeedbackStore(data / "playground.db")
        first = store.runs.start("cli", pid=os.getpid())
        with pytest.raises(RunInProgress):
            store.runs.start("cli", pid=os.getpid())
        store.runs.finish(first.id, "failed", error="test")
        store.close()
    finally:
        scheduler.shutdown()


def test_scheduled_trigger_waits_for_enough_new_feedback(tmp_path, hf_base_dir):
    data = data_dir_with_base(tmp_path, hf_base_dir)
    scheduler = TrainingScheduler(SchedulerConfig(every=0, min_feedback=5), no_data_config(data))
    assert scheduler._job("schedule") is None  # 0 new feedback < 5
    assert scheduler.runs.recent() == []
    assert scheduler.last_check["new_feedback"] == 0
    scheduler.shutdown()


def test_a_killed_cycle_changes_nothing_and_the_next_one_runs(tmp_path, hf_base_dir):
    data = data_dir_with_base(tmp_path, hf_base_dir)
    config = cycle_config(data)
    store = FeedbackStore(config.db_path)
    seed_feedback(store)
    deployed = store.versions.deployed(_embedded_name()).id
    scheduler = TrainingScheduler(SchedulerConfig(every=0, nice=5), config)
    scheduler.start()
    try:
        assert scheduler.trigger_now("ui") == "Training cycle starting."
        runs = store.runs
        run = wait_until(
            lambda: (r := runs.running()) and r.stage in ("reward", "policy") and r.pid and r,
            300,
            "training to start",
        )
        os.kill(run.pid, signal.SIGKILL)  # no chance to clean up
        killed = wait_until(
            lambda: (r := runs.get(run.id)).status != "running" and r, 60, "the scheduler to notice"
        )
        assert killed.status == "killed" and "exited with code -9" in killed.error
        assert store.versions.deployed(_embedded_name()).id == deployed
        assert not list((data / "adapters").glob("*")) if (data / "adapters").exists() else True
        # the scheduler keeps working: the next cycle runs (a quick one here)
        scheduler.cycle = replace(no_data_config(data))
        assert scheduler.trigger_now("ui") == "Training cycle starting."
        nxt = wait_until(
            lambda: [r for r in runs.recent() if r.id != run.id and r.status != "running"], 300, "next run"
        )
        assert nxt[0].status == "succeeded"
    finally:
        scheduler.shutdown()
        store.close()
