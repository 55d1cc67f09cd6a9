"""Progress of a training cycle: each stage's share of the bar, its wall time, and where it is reported
(the ``training_runs`` row the Training tab shows, and an optional callback such as the ``train --cycle``
progress bar)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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
