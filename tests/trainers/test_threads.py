"""Training threads follow the server: all cores while it is idle, ``--train-threads`` while chat runs;
the scheduler tells its training child with signals, and only once the child listens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from settings import TrainingSettings
from tests.conftest import ROOT
from trainers.cycle import CycleConfig
from trainers.scheduler import TrainingScheduler
from trainers.threads import ThreadBudget

CHILD = """
import sys, time
import torch
from trainers.threads import ThreadBudget
budget = ThreadBudget(busy=1, idle=2).install()
budget.apply()
print("listening", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    print(budget.apply(), flush=True)
    time.sleep(0.2)
"""


def test_the_budget_follows_the_signals():
    import torch

    before = torch.get_num_threads()
    budget = ThreadBudget(busy=1, idle=2).install()
    try:
        assert budget.apply() == 1 and torch.get_num_threads() == 1
        os.kill(os.getpid(), signal.SIGUSR1)
        assert budget.server_idle and budget.apply() == 2 and torch.get_num_threads() == 2
        os.kill(os.getpid(), signal.SIGUSR2)
        assert not budget.server_idle and budget.apply() == 1
        assert ThreadBudget(busy=1, idle=None, server_idle=True).current == (os.cpu_count() or 1)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        torch.set_num_threads(before)


def test_the_scheduler_signals_the_cycle_when_the_server_turns_idle_and_busy(tmp_path):
    config = CycleConfig(db_path=tmp_path / "playground.db", data_dir=tmp_path)
    start = time.monotonic() + 1e9  # idle from when the child listens (set below)
    # idle for the first 4 s of the cycle, then a chat starts
    scheduler = TrainingScheduler(
        TrainingSettings(every=0, idle_after=30),
        config,
        seconds_idle=lambda: 100.0 if time.monotonic() - start < 4.0 else 0.0,
    )
    run = scheduler.runs.start("test")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "7"], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert proc.stdout.readline().strip() == "listening"
    start = time.monotonic()
    scheduler.runs.update(run.id, stage="reward")  # the cycle has begun: it listens
    assert scheduler._wait(proc, run.id) == 0
    threads = [int(line) for line in proc.stdout.read().split()]
    # one thread until it listens, all cores while the server is idle, one thread again once chat runs
    assert 2 in threads and 1 in threads[threads.index(2) :] and threads[-1] == 1, threads
    scheduler.shutdown()
