"""Training runs and deployment events: what the loop did, when, and why.

A run row is created before any training starts and updated at each stage, so a browser can follow it
and a crash leaves a trace. The unique partial index on ``status = 'running'`` makes "one cycle at a
time" a property of the database, across processes: a second ``start`` raises ``RunInProgress``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.records import FromRow, StoreError

ACTIONS = ("deploy", "rollback", "reject", "approve")


class RunInProgress(StoreError):
    """Another training run is still running."""


@dataclass(frozen=True)
class TrainingRun(FromRow):
    id: int
    trigger: str
    status: str
    stage: str
    progress: float
    started_at: str
    updated_at: str
    message: str | None = None
    pid: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    candidate_version_id: int | None = None
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    log_path: str | None = None
    feedback_seen: int | None = None
    finished_at: str | None = None

    decoders = {
        **dict.fromkeys(("config", "metrics", "stage_seconds"), lambda value: json.loads(value or "{}")),
        "reasons": lambda value: json.loads(value or "[]"),
    }


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingRuns(Repository):
    """The ``training_runs`` rows (one per cycle, at most one running) and the deployment events."""

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, run_id: int) -> TrainingRun:
        row = next(self.db.query("SELECT * FROM training_runs WHERE id = ?", [run_id]), None)
        if row is None:
            raise StoreError(f"No training run {run_id}.")
        return TrainingRun.from_row(row)

    def running(self) -> TrainingRun | None:
        row = next(self.db.query("SELECT * FROM training_runs WHERE status = 'running'"), None)
        return None if row is None else TrainingRun.from_row(row)

    def recent(self, limit: int = 50) -> list[TrainingRun]:
        rows = self.db.query("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", [limit])
        return [TrainingRun.from_row(r) for r in rows]

    def last_finished(self, status: str = "succeeded") -> TrainingRun | None:
        row = next(
            self.db.query("SELECT * FROM training_runs WHERE status = ? ORDER BY id DESC LIMIT 1", [status]),
            None,
        )
        return None if row is None else TrainingRun.from_row(row)

    def feedback_count(self, since: str | None = None) -> int:
        """Feedback events (ratings, votes, rankings, better answers) created or updated since ``since``.
        Pairs a model labelled (mode "ai") are not the users' feedback and do not count."""
        total = 0
        for table in ("feedback", "comparisons", "rankings", "demonstrations"):
            where = ["mode <> 'ai'"] if table == "comparisons" else []
            args = []
            if since is not None:
                where.append("updated_at >= ?")
                args.append(since)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            sql = f"SELECT COUNT(*) AS n FROM {table}{clause}"  # noqa: S608 (fixed table names and clauses)
            total += next(self.db.query(sql, args))["n"]
        return total

    def new_feedback(self) -> int:
        """Feedback since the start of the last run that produced a decision (all of it if none)."""
        last = next(
            self.db.query(
                "SELECT started_at FROM training_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
            ),
            None,
        )
        return self.feedback_count(last["started_at"] if last else None)

    # -- writes --------------------------------------------------------------------------------------
    def start(
        self, trigger: str, config: dict[str, Any] | None = None, pid: int | None = None
    ) -> TrainingRun:
        """Create the running row; ``RunInProgress`` if another run holds it (a dead one is marked killed)."""
        self.reap()
        now = utc_now()
        try:
            with self.write() as db:
                cursor = db.execute(
                    "INSERT INTO training_runs (trigger, status, stage, config, pid, feedback_seen, started_at, "
                    "updated_at) VALUES (?, 'running', 'starting', ?, ?, ?, ?, ?)",
                    [trigger, json.dumps(config or {}, default=str), pid, self.feedback_count(), now, now],
                )
                run_id = int(cursor.lastrowid)
        except sqlite3.IntegrityError as exc:
            current = self.running()
            raise RunInProgress(
                f"training run {current.id if current else '?'} is still running; wait for it or stop it first"
            ) from exc
        return self.get(run_id)

    def set_pid(self, run_id: int, pid: int) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE training_runs SET pid = ?, updated_at = ? WHERE id = ?", [pid, utc_now(), run_id]
            )

    def update(
        self,
        run_id: int,
        *,
        stage: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        log_path: str | None = None,
        stage_seconds: dict[str, float] | None = None,
        metrics: dict[str, Any] | None = None,
        candidate_version_id: int | None = None,
    ) -> None:
        sets, args = ["updated_at = ?"], [utc_now()]
        for column, value in (
            ("stage", stage),
            ("progress", progress),
            ("message", message),
            ("log_path", log_path),
            ("candidate_version_id", candidate_version_id),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        for column, value in (("stage_seconds", stage_seconds), ("metrics", metrics)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(json.dumps(value, default=str))
        with self.write() as db:
            db.execute(f"UPDATE training_runs SET {', '.join(sets)} WHERE id = ?", [*args, run_id])  # noqa: S608

    def finish(
        self,
        run_id: int,
        status: str,
        *,
        decision: str | None = None,
        reasons: list[str] | None = None,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> TrainingRun:
        if status not in ("succeeded", "failed", "killed"):
            raise StoreError(f"a run finishes as succeeded, failed or killed, not {status!r}")
        now = utc_now()
        with self.write() as db:
            db.execute(
                "UPDATE training_runs SET status = ?, decision = COALESCE(?, decision), reasons = ?, error = ?, "
                "metrics = COALESCE(?, metrics), progress = CASE WHEN ? = 'succeeded' THEN 1 ELSE progress END, "
                "updated_at = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                [
                    status,
                    decision,
                    json.dumps(reasons or []),
                    error,
                    None if metrics is None else json.dumps(metrics, default=str),
                    status,
                    now,
                    now,
                    run_id,
                ],
            )
        return self.get(run_id)

    def reap(self) -> list[int]:
        """Mark runs whose process is gone as killed (a crash or kill -9 left them 'running')."""
        current = self.running()
        if current is None or _pid_alive(current.pid):
            return []
        self.finish(
            current.id, "killed", error="the training process ended without finishing (killed or crashed)"
        )
        return [current.id]

    # -- deployment events -----------------------------------------------------------------------------
    def record_event(
        self,
        version_id: int,
        action: str,
        actor: str,
        reasons: list[str] | None = None,
        run_id: int | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise StoreError(f"action must be one of {ACTIONS}")
        with self.write() as db:
            db.execute(
                "INSERT INTO deployment_events (version_id, action, actor, training_run_id, reasons, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [version_id, action, actor, run_id, json.dumps(reasons or []), utc_now()],
            )

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT * FROM deployment_events ORDER BY id DESC LIMIT ?", [limit])
        return [{**r, "reasons": json.loads(r["reasons"])} for r in rows]
