"""How many CPU threads the training process may use, changed while it runs: all cores while nobody
chats, ``--train-threads`` (one on a 2-core machine) while chat runs. Serving keeps priority.

The server knows when it is idle (``ModelService.seconds_idle``); the scheduler, in the server process,
tells its training child with a signal (SIGUSR1: the server is idle, SIGUSR2: chat is running). The
child only records the wish in the handler and applies it between optimiser steps
(``ThreadBudgetCallback``) and between stages, since torch must not be called from a signal handler.
A training step already running finishes with the threads it started with: at most one step (a few
seconds) of chat beside a two-thread step.

Why threads rather than only ``nice``: with OpenMP's spinning threads, two threads of training beside
a generating server collapse both (shared/FACTS.md); one thread each does not.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger(__name__)

IDLE_SIGNAL = signal.SIGUSR1
BUSY_SIGNAL = signal.SIGUSR2


@dataclass
class ThreadBudget:
    busy: int = 1
    """Threads while chat runs (and until the server says it is idle)."""
    idle: int | None = None
    """Threads while nobody chats; None: all cores."""
    server_idle: bool = False

    @property
    def current(self) -> int:
        if self.server_idle:
            return self.idle or os.cpu_count() or self.busy
        return self.busy

    def install(self) -> ThreadBudget:
        """Listen for the scheduler's signals (main thread only)."""
        signal.signal(IDLE_SIGNAL, lambda *_: setattr(self, "server_idle", True))
        signal.signal(BUSY_SIGNAL, lambda *_: setattr(self, "server_idle", False))
        return self

    def apply(self) -> int:
        """Set torch's thread count to the current budget if it changed; returns it."""
        import torch

        n = self.current
        if n != torch.get_num_threads():  # also when a trainer's config set its own count meanwhile
            torch.set_num_threads(n)
            log.info("training threads: %d (%s)", n, "server idle" if self.server_idle else "chat running")
        return n


def callback(budget: ThreadBudget):
    """A transformers TrainerCallback applying ``budget`` at the start of every optimiser step."""
    from transformers import TrainerCallback

    class ThreadBudgetCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            budget.apply()

    return ThreadBudgetCallback()
