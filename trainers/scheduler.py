"""The training scheduler: APScheduler 3 in the web process, training in a child process.

- Runs in exactly one process (the server started by ``launch.py``); the job store is APScheduler's
  in-memory one: a SQLAlchemy job store on the busy feedback database died silently once "database
  is locked" lasted over 5 s (no job ran again), so none is used — the schedule comes
  from the settings at each start, and the history lives in ``training_runs``.
- A scheduled trigger starts a cycle only when at least ``min_new_feedback`` feedback events arrived
  since the last finished cycle; "run now" (UI, ``trigger_now``) skips that check.
- Never two cycles at once: ``max_instances=1, coalesce=True`` for the scheduled job, a lock for
  triggers that race inside this process, and the database's one-running-row index across processes.
- Retention (``--retention-days``): a daily job, first run at start, deletes old conversations through
  ``store.conversations.delete_older_than`` (the same hard delete as a user's, so their feedback
  leaves training) and scrubs the run copies under ``DATA_DIR/runs``.
- The cycle runs as ``python -m trainers.worker`` with ``nice`` and capped threads (OMP/MKL/torch), so
  chat keeps its cores; the job thread waits for it and tells it, with a signal, whenever the server
  turns idle (no reply for ``idle_after`` seconds: train on all cores) or busy again (``threads``,
  ``trainers.threads``). A cycle that is killed or crashes leaves
  the deployed version serving and the scheduler running; the run row is marked killed/failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback_store.conversations import Deletion
from feedback_store.runs import RunInProgress
from feedback_store.store import FeedbackStore
from settings import TrainingSettings
from trainers.ai_judge import KEY_ENV as JUDGE_KEY_ENV
from trainers.cycle import CycleConfig
from trainers.threads import BUSY_SIGNAL, IDLE_SIGNAL

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
JOB_ID = "training-cycle"
RETENTION_JOB_ID = "retention"
CANARY_JOB_ID = "canary"
CANARY_CHECK_S = 60


@dataclass(frozen=True)
class SchedulerState:
    """What the Training tab shows about the scheduler."""

    enabled: bool
    schedule: str
    next_run: str | None
    min_new_feedback: int
    new_feedback: int
    auto_deploy: bool
    running: int | None
    last_check: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    """The policy update the cycles run: method and its options (e.g. "auto · DPO loss robust, ...")."""
    canary: str = ""
    """Canary battles as configured ("off", or their share and budgets)."""


def policy_summary(cycle: CycleConfig) -> str:
    """The cycle's policy update in one line, as the Training tab shows it."""
    parts = [cycle.method]
    if cycle.method in ("auto", "dpo"):
        parts.append(f"DPO loss {cycle.dpo_loss}, label smoothing {cycle.label_smoothing:g}")
    parts.append(
        f"replay term {cycle.ptx_coef:g} ({cycle.replay})" if cycle.ptx_coef > 0 else "no replay term"
    )
    return " · ".join(parts)


def canary_summary(cycle: CycleConfig) -> str:
    """The canary settings in one line, as the Training tab shows them."""
    c = cycle.canary
    if c.share <= 0:
        return "off (the offline gate decides alone; --canary-share 0.3 puts candidates before the users)"
    which = "passed or undecided" if c.undecided else "passed"
    return (
        f"{c.share:.0%} of anonymous battles while a candidate that {which} the gate is live; "
        f"{c.votes} decisive votes or {c.hours:g} h at most, {c.per_user} votes per user"
    )


class TrainingScheduler:
    """Starts training cycles on a schedule or on demand; ``config`` is the training section of the
    settings (schedule, minimum of new feedback, threads and priority of the child process)."""

    def __init__(
        self,
        config: TrainingSettings,
        cycle: CycleConfig,
        seconds_idle: Callable[[], float] | None = None,
    ):
        """``seconds_idle``: how long the server has generated nothing (``ModelService.seconds_idle``);
        None: no server in this process, the cycle keeps ``threads``."""
        self.config = config
        self.cycle = cycle
        self.seconds_idle = seconds_idle
        self._store = FeedbackStore(cycle.db_path)
        self.runs = self._store.runs
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._scheduler = None
        self.last_check: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        reaped = self.runs.reap()
        if reaped:
            log.warning(
                "training run(s) %s were left running by a process that is gone: marked killed", reaped
            )
        self._scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone=UTC,
        )
        if self.config.cron or self.config.every > 0:
            trigger = (
                CronTrigger.from_crontab(self.config.cron, timezone=UTC)
                if self.config.cron
                else IntervalTrigger(minutes=self.config.every, timezone=UTC)
            )
            self._scheduler.add_job(self._job, trigger, args=["schedule"], id=JOB_ID, replace_existing=True)
        if self.config.retention_days:
            self._scheduler.add_job(
                self.apply_retention,
                IntervalTrigger(hours=24, timezone=UTC),
                id=RETENTION_JOB_ID,
                next_run_time=datetime.now(UTC),
                replace_existing=True,
            )
        # a canary's time budget, checked even with --canary-share 0: one may still be live from before
        self._scheduler.add_job(
            self.settle_canary,
            IntervalTrigger(seconds=CANARY_CHECK_S, timezone=UTC),
            id=CANARY_JOB_ID,
            replace_existing=True,
        )
        self._scheduler.start()

    def settle_canary(self) -> None:
        """Apply the live canary's decision once its votes or its time budget allow (votes also settle
        it at once in the Compare tab; this catches the time budget)."""
        self._store.canaries.try_settle()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the cycle records itself as killed; the deployed version is untouched
        self._store.close()

    def apply_retention(self, now: datetime | None = None) -> Deletion | None:
        """Delete conversations older than ``retention_days`` (None when retention is off)."""
        if not self.config.retention_days:
            return None
        done = self._store.conversations.delete_older_than(
            self.config.retention_days, now=now, scrub_dirs=[self.cycle.data_dir / "runs"]
        )
        if done.conversations:
            log.info("retention (%g days): deleted %s", self.config.retention_days, done.describe())
        return done

    # -- triggers ------------------------------------------------------------------------------------
    def trigger_now(self, trigger: str = "manual") -> str:
        """Start a cycle in the background now (no minimum of new feedback). Returns a message."""
        if self._lock.locked() or self.runs.running() is not None:
            return "A training cycle is already running; this request was not queued."
        if self._scheduler is None:
            threading.Thread(target=self._job, args=[trigger], daemon=True).start()
        else:
            self._scheduler.add_job(
                self._job, "date", args=[trigger], id=f"{JOB_ID}-now", replace_existing=True
            )
        return "Training cycle starting."

    def run_now_and_wait(self, trigger: str = "manual") -> int | None:
        """Run one cycle now (the same child process as a scheduled one) and wait for it; returns the
        run id, or None when another cycle holds the run row. For drivers such as the simulated-user loop."""
        return self._job(trigger)

    def _job(self, trigger: str) -> int | None:
        """Run one cycle if allowed; returns the run id (None when skipped)."""
        if not self._lock.acquire(blocking=False):
            log.info("%s trigger skipped: a cycle is already running in this process", trigger)
            return None
        try:
            new = self.runs.new_feedback()
            self.last_check = {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "trigger": trigger,
                "new_feedback": new,
            }
            if trigger == "schedule" and new < self.config.min_feedback:
                log.info("scheduled cycle skipped: %d new feedback < %d", new, self.config.min_feedback)
                return None
            live = self._store.canaries.live() if trigger == "schedule" else None
            if live is not None:  # the users are deciding on a candidate: "run now" supersedes it
                log.info("scheduled cycle skipped: canary %d on v%d is live", live.id, live.candidate_id)
                self.last_check["canary"] = live.id
                return None
            try:
                run = self.runs.start(trigger, self.cycle.to_dict())
            except RunInProgress as exc:
                log.info("%s trigger skipped: %s", trigger, exc)
                return None
            self._execute(run.id)
            return run.id
        finally:
            self._lock.release()

    def _execute(self, run_id: int) -> None:
        """Run the cycle in a low-priority child process and wait for it."""
        run_dir = self.cycle.data_dir / "runs"
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / f"run-{run_id}.json"
        config_path.write_text(json.dumps(self.cycle.to_dict()))
        log_path = run_dir / f"run-{run_id}.log"
        threads = str(self.config.threads)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OMP_WAIT_POLICY": "PASSIVE",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        if self.cycle.ai_judge_api_key:  # not in the config file: secrets stay out of files and the store
            env[JUDGE_KEY_ENV] = self.cycle.ai_judge_api_key
        cmd = [sys.executable, "-m", "trainers.worker", "--run-id", str(run_id), "--config", str(config_path)]
        nice = self.config.nice
        with log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,  # noqa: PLW1509 (only os.nice, no locks)
            )
            self.runs.set_pid(run_id, self._proc.pid)
            self.runs.update(run_id, log_path=str(log_path))
            code = self._wait(self._proc, run_id)
        self._proc = None
        run = self.runs.get(run_id)
        if run.status == "running":  # the child died without recording an outcome (kill -9, OOM, ...)
            status = "killed" if code < 0 else "failed"
            self.runs.finish(
                run_id, status, error=f"the cycle process exited with code {code}; see {log_path}"
            )
        log.info("training run %d finished: %s", run_id, self.runs.get(run_id).status)

    def _wait(self, proc: subprocess.Popen, run_id: int) -> int:
        """Wait for the cycle, telling it when the server turns idle or busy (it starts as busy). Only
        once it has begun its first stage: before that it may not listen yet, and the signals' default
        action would end it."""
        idle, listening = False, False
        while True:
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if self.seconds_idle is None:
                continue
            listening = listening or self.runs.get(run_id).stage != "starting"
            if not listening:
                continue
            now_idle = self.seconds_idle() >= self.config.idle_after
            if now_idle != idle:
                idle = now_idle
                with contextlib.suppress(ProcessLookupError):  # it just ended
                    proc.send_signal(IDLE_SIGNAL if idle else BUSY_SIGNAL)

    # -- state for the UI ----------------------------------------------------------------------------
    def state(self) -> SchedulerState:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        running = self.runs.running()
        if job is None:
            schedule = "on demand only"
        elif self.config.cron:
            schedule = f"cron {self.config.cron}"
        else:
            schedule = f"every {self.config.every:g} min"
        return SchedulerState(
            enabled=job is not None,
            schedule=schedule,
            next_run=job.next_run_time.isoformat(timespec="seconds") if job and job.next_run_time else None,
            min_new_feedback=self.config.min_feedback,
            new_feedback=self.runs.new_feedback(),
            auto_deploy=self.cycle.auto_deploy,
            running=running.id if running else None,
            last_check=dict(self.last_check),
            policy=policy_summary(self.cycle),
            canary=canary_summary(self.cycle),
        )

    def stop_running(self) -> str:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return "No training cycle is running in this server."
        proc.terminate()
        return "Stopping the training cycle; the deployed version keeps serving."
