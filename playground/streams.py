"""Several replies streamed at once (Compare: two side by side; Rank: K), merged into one iterator.

Each stream is drained by its own thread into one queue, so the UI shows text from every reply as
soon as it arrives instead of one reply after the other.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from models.base import ChatMessage, Generation, GenerationError, GenerationResult

log = logging.getLogger(__name__)

_END = object()


class Prompt(NamedTuple):
    """A prompt the Compare or Rank tab has stored and moderated, ready to be answered several times."""

    conversation_id: str
    message_id: int
    check: Any  # playground.safety.InputCheck
    messages: list[ChatMessage]


def start_prompt(store, safety, user: str, source: str, prompt: str, system_prompt: str | None) -> Prompt:
    """Store the user's prompt in a new conversation with its moderation decision, and build the
    messages the model will see (the caller refuses when ``check.refused``)."""
    check = safety.check_input(prompt, report_hint=False)
    conv = store.create_conversation(user, source=source, system_prompt=system_prompt or None)
    message_id = store.add_message(conv, "user", prompt, moderation=check.moderation)
    messages: list[ChatMessage] = []
    if system_prompt and system_prompt.strip():
        messages.append(ChatMessage(role="system", content=system_prompt.strip()))
    messages.append(ChatMessage(role="user", content=prompt))
    return Prompt(conv, message_id, check, messages)


class Interleaved:
    """Iterate for ``(stream index, chunk)`` in arrival order until every stream has ended.

    A stream that raises simply ends here; its owner sees the error when it asks for the result
    (``Generation.wait()`` re-raises it). A consumer that stops early must cancel the streams and
    ``join()`` before reading their results, so that no two threads read one stream.
    """

    def __init__(self, streams: Sequence[Iterable[str]]):
        self._merged: queue.SimpleQueue = queue.SimpleQueue()
        self._remaining = len(streams)
        self._threads = [
            threading.Thread(target=self._pump, args=(i, s), name=f"stream-{i}", daemon=True)
            for i, s in enumerate(streams)
        ]
        for t in self._threads:
            t.start()

    def _pump(self, index: int, stream: Iterable[str]) -> None:
        try:
            for chunk in stream:
                self._merged.put((index, chunk))
        except Exception:  # noqa: S110 (reported by the stream's own result)
            pass
        finally:
            self._merged.put((index, _END))

    def __iter__(self) -> Iterator[tuple[int, str]]:
        while self._remaining:
            index, chunk = self._merged.get()
            if chunk is _END:
                self._remaining -= 1
            else:
                yield index, chunk

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every pump to finish; False if one is still running after ``timeout``."""
        for t in self._threads:
            t.join(timeout)
        return not any(self.alive())

    def alive(self) -> list[bool]:
        return [t.is_alive() for t in self._threads]


def finish(
    generations: Sequence[Generation], merged: Interleaved, timeout: float = 60.0
) -> list[GenerationResult | None]:
    """Stop what still runs, wait for the pumps, and return each generation's result (None: failed,
    or still stuck after ``timeout``). Safe to call from a ``finally`` after the consumer stopped."""
    for g in generations:
        g.cancel()  # no-op for a finished generation
    if not merged.join(timeout):
        log.warning("a generation did not stop within %.0f s; its reply is not stored", timeout)
    results: list[GenerationResult | None] = []
    for g, alive in zip(generations, merged.alive(), strict=True):
        if alive:
            results.append(None)
            continue
        try:
            results.append(g.wait())
        except GenerationError as exc:
            log.warning("generation failed: %s", exc)
            results.append(None)
    return results
