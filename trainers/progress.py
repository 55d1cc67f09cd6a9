"""Progress of a training cycle: each stage's share of the bar, its wall time, and where it is reported
(the ``training_runs`` row the Training tab shows, and an optional callback such as the ``train --cycle``
progress bar)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from feedback_store.runs import TrainingRuns

log = logging.getLogger("trainers.cycle")

# Share of the run's progress bar taken by each stage (they add up to 1).
STAGE_WEIGHTS = {"export": 0.05, "reward": 0.30, "policy": 0.40, "evaluate": 0.20, "deploy": 0.05}
ProgressCallback = Callable[[float, str, str], None]
"""(fraction of the whole cycle done 0..1, stage, message)."""


class Stages:
    """Progress bookkeeping: each stage's share of the bar, its wall time, and the run row."""

    def __init__(
        self, runs: TrainingRuns | None, run_id: int | None, on_progress: ProgressCallback | None = None
    ):
        self.runs, self.run_id = runs, run_id
        self.on_progress = on_progress
        self.seconds: dict[str, float] = {}
        self._done = 0.0
        self._current: str | None = None
        self._t = time.perf_counter()

    def begin(self, stage: str, message: str) -> None:
        self._close()
        self._current, self._t = stage, time.perf_counter()
        log.info("[%s] %s", stage, message)
        self._report(self._done, message)
        if self.runs:
            self.runs.update(self.run_id, stage=stage, progress=self._done, message=message)

    def within(self, message: str, fraction: float) -> None:
        """Progress inside the current stage (``fraction`` of it done)."""
        log.info("[%s] %s", self._current, message)
        if self._current:
            done = self._done + STAGE_WEIGHTS.get(self._current, 0.0) * max(0.0, min(1.0, fraction))
            self._report(done, message)
            if self.runs:
                self.runs.update(self.run_id, progress=done, message=message)

    def _report(self, done: float, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(done, self._current or "", message)

    def _close(self) -> None:
        if self._current is not None:
            self.seconds[self._current] = round(time.perf_counter() - self._t, 2)
            self._done += STAGE_WEIGHTS.get(self._current, 0.0)
            if self.runs:
                self.runs.update(self.run_id, stage_seconds=self.seconds)
            self._current = None

    def end(self) -> dict[str, float]:
        self._close()
        return self.seconds


def training_progress(say: Callable[[str, float], None], label: str, start: float, end: float):
    """A transformers TrainerCallback that reports each optimiser step through ``say(message, fraction)``
    (``label: step 12 of 30``), the fraction running from ``start`` to ``end`` as the steps do, so the
    Training tab's bar moves through the minutes a policy update takes instead of standing still.

    A trainer with work before its steps (best-of-n samples replies first) reports it with ``report``
    and gives the steps the rest of the span with ``steps_within``."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self) -> None:
            self.low, self.high = 0.0, 1.0  # the share of [start, end] that the optimiser steps take

        def report(self, message: str, fraction: float) -> None:
            """``fraction`` (0..1) of the part of the training now running is done."""
            share = self.low + (self.high - self.low) * max(0.0, min(1.0, fraction))
            say(f"{label}: {message}", start + (end - start) * share)

        def steps_within(self, low: float, high: float) -> None:
            self.low, self.high = low, high

        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps:
                self.report(
                    f"step {state.global_step} of {state.max_steps}", state.global_step / state.max_steps
                )

    return TrainingProgress()


def progress_among(callbacks) -> Any:
    """The ``training_progress`` callback among a trainer's ``callbacks``, or None."""
    return next((cb for cb in callbacks or () if hasattr(cb, "steps_within")), None)
