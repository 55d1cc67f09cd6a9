"""``python launch.py train``: run one training method on the stored feedback, with a progress bar.

    python launch.py train --method dpo [--since 2026-11-01] [--max-steps 50] [--init-from deployed]

The served base (``--model``), database and data directory follow the same flags and PLAYGROUND_*
variables as the server, so the adapter fits the model being served. Too little data is a clear
message and exit code 3; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trainers.run import METHODS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py train", description="Train on the stored feedback.")
    p.add_argument(
        "--method",
        choices=METHODS,
        required=True,
        help="reward: reward model; dpo/kto/sft/rl/best_of_n: a new policy adapter (candidate version)",
    )
    p.add_argument("--since", help="only feedback updated at or after this ISO time (e.g. 2026-11-01)")
    p.add_argument("--user", help="only this user's feedback")
    p.add_argument("--version", type=int, help="only feedback on replies written by this model version")
    p.add_argument(
        "--init-from",
        choices=["base", "deployed"],
        default="base",
        help="start from a fresh LoRA (reference = base) or continue the deployed adapter",
    )
    p.add_argument("--reward-model", help="reward adapter directory (default: the latest trained one)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--epochs", type=float, help="passes over the data (default per method)")
    p.add_argument("--lr", type=float, help="learning rate (default per method)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--eval-prompts", type=int, default=8, help="held-out prompts for KL / reward evaluation")
    p.add_argument(
        "--no-register", action="store_true", help="do not add the adapter to the version registry"
    )
    p.add_argument("--model", help="the served base model (GGUF file or HF directory); default: embedded")
    p.add_argument("--data-dir", help="data directory (default ./data)")
    p.add_argument("--db", help="SQLite file (default DATA_DIR/playground.db)")
    return p


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    if not args.cycle and not args.method:
        parser.error("give --method METHOD, or --cycle for a whole training cycle")
    from playground.settings import Settings
    from trainers.common import TrainingDataError
    from trainers.run import TrainRequest, run_training

    settings = Settings(
        **{k: v for k, v in {"model": args.model, "data_dir": args.data_dir, "db": args.db}.items() if v}
    )
    overrides = {
        k: v
        for k, v in {
            "max_steps": args.max_steps,
            "num_epochs": args.epochs,
            "learning_rate": args.lr,
            "threads": args.threads,
        }.items()
        if v is not None
    }
    request = TrainRequest(
        method=args.method,
        db_path=settings.db_path,
        data_dir=Path(settings.data_dir),
        model=settings.model,
        since=args.since,
        user_id=args.user,
        version_id=args.version,
        init_from=args.init_from,
        reward_adapter=args.reward_model,
        overrides=overrides,
        eval_prompts=args.eval_prompts,
        register=not args.no_register,
    )

    def progress(message: str, fraction: float) -> None:
        print(f"[{fraction * 100:5.1f}%] {message}", flush=True)

    try:
        outcome = run_training(request, progress=progress)
    except TrainingDataError as exc:
        print(f"not enough data: {exc}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in outcome.result.metrics.items() if not isinstance(v, (list, dict))}
    print(
        json.dumps(
            {
                "adapter": str(outcome.result.adapter_dir),
                "version_id": outcome.version_id,
                "gguf_adapter": str(outcome.gguf_adapter) if outcome.gguf_adapter else None,
                **summary,
            },
            indent=2,
            default=str,
        )
    )
    return 0


def run_cycle_command(settings, args) -> int:
    """One cycle in this process, reported in training_runs like a scheduled one (one at a time)."""
    import os
    from dataclasses import replace

    from feedback_store.runs import RunInProgress, TrainingRuns
    from feedback_store.store import FeedbackStore
    from trainers.cycle import run_cycle_for

    config = settings.cycle_config()
    if args.method:
        config = replace(config, method=args.method)
    if args.threads:
        config = replace(config, threads=args.threads)
    store = FeedbackStore(config.db_path)
    try:
        run = TrainingRuns(store).start("cli", config.to_dict(), pid=os.getpid())
    except RunInProgress as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    finally:
        store.close()
    print(f"training run {run.id}: progress is shown in the Training tab and in the log below", flush=True)
    return run_cycle_for(config, run.id)
