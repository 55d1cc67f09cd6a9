"""``python launch.py train``: train on the stored feedback, in the foreground, with a progress bar.

    python launch.py train --cycle                  # one whole cycle, exactly as the scheduler runs it
    python launch.py train --method dpo [--since 2026-11-01] [--max-steps 50] [--init-from deployed]

``--cycle`` builds the same ``CycleConfig`` from the same settings as the server's scheduler (gate,
thresholds, auto-deploy, hygiene), reports into a ``training_runs`` row (trigger "cli") and stores the
gate's decision and reasons there, so the Training tab shows it like a scheduled run. ``--method`` trains
one method and registers a candidate version (a reward model is not a version). Too little data is a
clear message, never a half-written adapter.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from settings import Settings
from trainers import registry

EXIT_NO_DATA = 3
EXIT_RUN_IN_PROGRESS = 4


class ProgressBar:
    """A tqdm bar in percent, fed by (fraction done, stage, message) callbacks."""

    def __init__(self) -> None:
        self.bar = tqdm(total=100, bar_format="{n:3.0f}% |{bar:20}| {elapsed} {desc}")

    def __call__(self, done: float, stage: str, message: str) -> None:
        self.bar.n = round(100 * max(0.0, min(1.0, done)), 1)
        self.bar.set_description(f"{stage}: {message[:80]}" if stage else message[:80], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class TrainCommand(Settings):
    """Train on the stored feedback: one whole cycle as the scheduler runs it (--cycle), or one method
    (--method). The training section's flags (--train-threads, --train-max-steps ...) and the gate's
    (--gate-...) apply as in the server."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py train")

    cycle: bool = Field(False, description="run one whole training cycle, as the scheduler does")
    method: Literal[registry.names()] | None = Field(  # type: ignore[valid-type]
        None,
        description="train this method: reward (the reward model) or a policy method (a candidate version); "
        "with --cycle: the cycle's policy method",
    )
    since: str | None = Field(
        None, description="only feedback updated at or after this ISO time (e.g. 2026-11-01)"
    )
    user: str | None = Field(None, description="only this user's feedback (--method)")
    version: int | None = Field(
        None, description="only feedback on replies written by this model version (--method)"
    )
    init_from: Literal["base", "deployed"] = Field(
        "base", description="start from a fresh LoRA (reference = base) or continue the deployed adapter"
    )
    reward_model: str | None = Field(
        None, description="reward adapter directory (unset: the latest trained one)"
    )
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    epochs: float | None = Field(None, gt=0, description="passes over the data (unset: the method's default)")
    lr: float | None = Field(None, gt=0, description="learning rate (unset: the method's default)")
    eval_prompts: int = Field(
        8, ge=0, description="held-out prompts for the KL / reward evaluation (--method)"
    )
    add_version: bool = Field(
        True, alias="register", description="add the trained adapter to the version registry (--method)"
    )

    def run(self) -> int:
        if not self.cycle and self.method is None:
            print("error: give --method METHOD, or --cycle for a whole training cycle", file=sys.stderr)
            return 2
        bar = ProgressBar()
        try:
            with logging_redirect_tqdm():
                return self._cycle(bar) if self.cycle else self._one_method(bar)
        finally:
            bar.close()

    def _overrides(self) -> dict[str, Any]:
        values = {
            "max_steps": self.max_steps or self.training.max_steps,
            "num_epochs": self.epochs,
            "learning_rate": self.lr,
            "threads": self.training.threads,
        }
        return {k: v for k, v in values.items() if v is not None}

    def _method_overrides(self) -> dict[str, Any]:
        """What --method trains with besides --max-steps etc.: the training section's levers, as a cycle
        would (the replay term for policy methods only)."""
        from trainers.cycle import BF16, dpo_options

        t = self.training
        values = {**self._overrides(), "lora_layers": t.lora_layers, "bf16": BF16[t.bf16]}
        if registry.get(str(self.method)).policy:
            values["ptx_coef"] = t.ptx_coef
        return {**values, **dpo_options(str(self.method), t.dpo_loss, t.label_smoothing)}

    def _cycle(self, bar: ProgressBar) -> int:
        from feedback_store.runs import RunInProgress
        from feedback_store.store import FeedbackStore
        from trainers.cycle import CycleConfig
        from trainers.worker import run_cycle_for

        config = CycleConfig.from_settings(self)
        if self.method is not None:
            config = replace(config, method=registry.check_policy_method(self.method))
        steps = {k: v for k, v in self._overrides().items() if k != "threads"}
        config = replace(
            config,
            reward_overrides={**config.reward_overrides, **steps},
            policy_overrides={**config.policy_overrides, **steps},
        )
        store = FeedbackStore(config.db_path)
        try:
            run = store.runs.start("cli", config.to_dict(), pid=os.getpid())
        except RunInProgress as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_RUN_IN_PROGRESS
        finally:
            store.close()
        tqdm.write(f"training run {run.id}: also shown in the Training tab; log in {config.data_dir}/runs/")
        return run_cycle_for(config, run.id, on_progress=bar)

    def _one_method(self, bar: ProgressBar) -> int:
        from trainers.common import TrainingDataError
        from trainers.run import TrainRequest, run_training

        request = TrainRequest(
            method=str(self.method),
            db_path=self.db_path,
            data_dir=self.data_dir,
            model=self.model,
            since=self.since,
            user_id=self.user,
            version_id=self.version,
            init_from=self.init_from,
            reward_adapter=self.reward_model,
            overrides=self._method_overrides(),
            eval_prompts=self.eval_prompts,
            register=self.add_version,
            hygiene=self.training.hygiene,
            replay=self.training.replay,
            system_prompt=self.server.system_prompt or None,
            chat_template=self.inference.chat_template,
            reward_warm_start=self.training.reward_warm_start,
        )
        try:
            outcome = run_training(
                request, progress=lambda message, done: bar(done, str(self.method), message)
            )
        except TrainingDataError as exc:
            print(f"not enough data: {exc}", file=sys.stderr)
            return EXIT_NO_DATA
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
