"""Counting a local backend's generations in flight, so that closing a model waits for those running.

A backend whose ``close`` frees what a running generation uses (llama.cpp contexts, a transformers
adapter or base) mixes in :class:`CountedGenerations`: ``_start`` counts a generation in (refused once
the model is closed) and fits its messages into the context; the generation's producer counts it out
with ``_release``; ``_close_when_idle`` refuses new generations and waits for the running ones.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence

from models.base import ChatMessage, GenerationError, SamplingParams
from models.context import FittedPrompt, fit_to_context

log = logging.getLogger(__name__)


class CountedGenerations:
    """The in-flight count of a backend (a ``BaseChatModel``); ``_init_count`` starts it at zero."""

    display_name: str
    context_length: int
    render_prompt: Callable[[Sequence[ChatMessage]], str]
    count_tokens: Callable[[str], int]

    def _init_count(self) -> None:
        self._closed = False
        self._active = 0  # generations created and not yet finished
        self._idle = threading.Condition()

    def _refuses(self) -> bool:
        """Whether new generations are refused: the model was closed."""
        return self._closed

    @contextlib.contextmanager
    def _start(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Iterator[FittedPrompt]:
        """Count a generation in and give ``messages`` fitted into the context. The body prepares the
        generation's inputs; when it (or the fitting) raises, the generation is counted out again."""
        with self._idle:  # counted from here, so close() never frees what the body uses under us
            if self._refuses():
                raise GenerationError("this model was unloaded; the server swapped to another version")
            self._active += 1
        try:
            yield fit_to_context(
                messages,
                render=self.render_prompt,
                count_tokens=self.count_tokens,
                context_length=self.context_length,
                max_new_tokens=params.max_new_tokens,
            )
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    @property
    def active_generations(self) -> int:
        return self._active

    def _close_when_idle(self, timeout: float | None) -> bool:
        """Refuse new generations, then wait up to ``timeout`` seconds for the running ones. False (with
        a warning) when some still run: the caller must then not free what they use."""
        with self._idle:
            self._closed = True
            if not self._idle.wait_for(lambda: self._active == 0, timeout=timeout):
                log.warning("closing %s with %d generations still running", self.display_name, self._active)
                return False
        return True
