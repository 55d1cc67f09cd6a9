"""The training process: ``python -m trainers.worker --run-id N --config FILE`` runs one cycle for a
``training_runs`` row and records its outcome there (the scheduler starts it with ``nice`` and capped
threads; ``launch.py train --cycle`` calls ``run_cycle_for`` in the foreground).

The scheduler's SIGUSR1 / SIGUSR2 say the server is idle / busy: training then uses all cores
(``--train-idle-threads``) or ``--train-threads`` (``trainers.threads``). A polite stop (SIGTERM)
unwinds and is recorded as killed; a crash is recorded as failed with its
traceback; too little data is a finished run with the decision "no_candidate".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from feedback_store.store import FeedbackStore
from trainers.common import TrainingDataError
from trainers.cycle import CycleConfig, run_cycle
from trainers.progress import ProgressCallback
from trainers.threads import ThreadBudget


def main(argv: Sequence[str] | None = None) -> int:
    """The child process's entry point. People run ``launch.py train --cycle`` instead, whose settings
    are the server's; this takes the JSON the scheduler wrote from those settings."""
    ap = argparse.ArgumentParser(prog="python -m trainers.worker", description="Run one training cycle.")
    ap.add_argument("--run-id", type=int, required=True, help="the training_runs row to report into")
    ap.add_argument("--config", required=True, help="a JSON CycleConfig (the scheduler writes it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = CycleConfig.from_dict(json.loads(Path(args.config).read_text()))
    threads = ThreadBudget(busy=config.threads or 1, idle=config.idle_threads).install()
    return run_cycle_for(config, args.run_id, threads=threads)


def run_cycle_for(
    config: CycleConfig,
    run_id: int,
    on_progress: ProgressCallback | None = None,
    threads: ThreadBudget | None = None,
) -> int:
    """Run the cycle for an existing run row and record its outcome there; returns an exit code.
    The outcome's JSON goes to stdout."""
    # A polite stop (SIGTERM from the scheduler or a user) unwinds normally and is recorded as killed;
    # the caller's own handler is back when the cycle ends (a test or a tool may run cycles in-process).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    store = FeedbackStore(config.db_path)
    runs = store.runs
    handler = None
    try:
        runs.set_pid(run_id, os.getpid())
        if not runs.get(run_id).log_path:  # run from a terminal: keep a log file the Training tab can show
            log_path = config.data_dir / "runs" / f"run-{run_id}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
            runs.update(run_id, log_path=str(log_path))
        try:
            outcome = run_cycle(config, run_id, on_progress, threads)
        except TrainingDataError as exc:
            runs.finish(run_id, "succeeded", decision="no_candidate", reasons=[str(exc)])
            print(f"no candidate: {exc}", file=sys.stderr)
            return 0
        except (KeyboardInterrupt, SystemExit) as exc:
            runs.finish(run_id, "killed", error=f"stopped ({type(exc).__name__})")
            return 130
        except Exception as exc:
            runs.finish(
                run_id, "failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            )
            print(f"cycle failed: {exc}", file=sys.stderr)
            return 1
        runs.finish(
            run_id,
            "succeeded",
            decision=outcome.decision,
            reasons=outcome.reasons,
            metrics={**outcome.metrics, "stage_seconds": outcome.stage_seconds},
        )
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "decision": outcome.decision,
                    "candidate": outcome.candidate_version_id,
                    "reasons": outcome.reasons,
                    "stage_seconds": outcome.stage_seconds,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        store.close()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
