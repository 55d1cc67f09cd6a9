"""The reply service: what every place that answers a prompt shares (the Chat, Compare and Rank tabs,
the Prompt lab and the ``/v1`` API).

- ``Answerer``: what each of them holds (settings, store, model service, safety checks);
- ``MAX_MESSAGE_CHARS``: the longest message a tab keeps;
- ``turn_record``: a finished ``GenerationResult`` as the store's ``AssistantTurn``;
- ``start_prompt``: count a chat turn against the rate limits, store the prompt in a new conversation
  with its moderation decision (a refused one raises ``PromptRefused``) and build the messages the
  model sees; ``start_replies`` starts its replies;
- ``Interleaved``: several streams (model text, or a preset run's events) merged into one iterator,
  each drained by its own thread, so every reply shows text as soon as it has some;
- ``stream_replies``: one round of replies streamed together: the streaming content check stops a
  flagged reply before its text reaches the screen, and the round always finishes (cancel, join, wait);
- ``run_round``: the same, then each reply checked with ``safety.check_output`` and stored;
  ``answer_prompt`` runs it on the first replies to a prompt ``start_prompt`` stored.

Nothing here touches Gradio: a tab passes a ``render`` callback that turns the replies (``Reply``,
updated in place) into its own component updates, and yields what the round yields.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from feedback_store.store import AssistantTurn, FeedbackStore
from models.base import ChatMessage, Generation, GenerationError, GenerationResult
from models.service import ModelService
from playground.messages import with_system
from playground.presets.events import Event
from playground.presets.runner import PresetRun
from playground.safety import WITHHELD_WHILE_STREAMING, Safety
from settings import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 100_000
FINISH_TIMEOUT_S = 60.0  # how long a cancelled reply may take to stop before it is given up on

T = TypeVar("T")
Stream = Generation | PresetRun  # text pieces, or a prompt technique's events


class Answerer:
    """A place that answers prompts (the Chat, Compare and Rank tabs, the ``/v1`` API): it holds the
    settings, the store its conversations go to, the model service and the safety checks (required:
    nothing answers a prompt without them)."""

    def __init__(self, settings: Settings, store: FeedbackStore, service: ModelService, *, safety: Safety):
        self.settings = settings
        self.store = store
        self.service = service
        self.safety = safety


def turn_record(
    result: GenerationResult,
    preset_id: str | None = None,
    trace: Any = None,
    *,
    moderation: dict[str, Any] | None = None,
) -> AssistantTurn:
    """What the store keeps of a generated reply: text, version, parameters, exact prompt, timings."""
    return AssistantTurn(
        content=result.text,
        model_version_id=result.version_id,
        params=result.params.to_dict(),
        prompt=result.prompt,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        ttft_ms=None if result.ttft_s is None else result.ttft_s * 1000,
        tokens_per_s=result.tokens_per_s,
        total_ms=result.total_s * 1000,
        finish_reason=result.finish_reason,
        preset_id=preset_id,
        moderation=moderation,
        trace=trace,
    )


# -- a prompt and its replies ---------------------------------------------------------------------
class PromptRefused(ValueError):
    """A prompt that is not answered: over a rate limit (not stored), or refused by the content filter
    (stored with the decision). The message says why, for the user."""


@dataclass(frozen=True)
class Prompt:
    """A prompt stored and moderated in a new conversation, ready to be answered several times."""

    conversation_id: str
    message_id: int
    notice: str | None  # to show: the prompt is answered, but flagged (and so kept out of training)
    messages: list[ChatMessage]  # what the model sees


def start_prompt(
    store: FeedbackStore,
    safety: Safety,
    request: Any,
    source: str,
    prompt: str,
    system_prompt: str | None,
    owner: str | None = None,
) -> Prompt:
    """Count one chat turn for the request's user, store ``prompt`` in a new conversation (``source``)
    owned by ``owner`` (``access.owner_id``; default: the request's user) with its moderation decision,
    and return what the model will see. ``PromptRefused`` when over a rate limit, or (after storing
    it) when the content filter refuses it."""
    if why := safety.limit("chat", request):
        raise PromptRefused(why)
    check = safety.check_input(prompt, report_hint=False)
    conversation_id = store.create_conversation(
        owner or safety.user_id(request), source=source, system_prompt=system_prompt or None
    )
    message_id = store.add_message(conversation_id, "user", prompt, moderation=check.moderation)
    if check.refused:
        raise PromptRefused(check.refusal)
    messages = with_system(system_prompt, [ChatMessage(role="user", content=prompt)])
    return Prompt(conversation_id, message_id, check.notice, messages)


@dataclass(eq=False)
class Reply:
    """One reply of a round: its stream, and what it has become so far (updated in place)."""

    stream: Stream
    text: str = ""  # the answer as streamed so far
    stopped: bool = False  # the streaming content check stopped it
    result: GenerationResult | None = None  # once finished; None: it failed (or never stopped)
    error: GenerationError | None = None  # why it failed, when it raised
    shown: str | None = None  # once stored: what the user sees (the reply, withheld, or marked)
    message_id: int | None = None  # once stored

    @property
    def preset_id(self) -> str | None:
        return self.stream.preset.id if isinstance(self.stream, PresetRun) else None

    @property
    def trace(self) -> list[dict[str, Any]] | None:
        return self.stream.trace if isinstance(self.stream, PresetRun) else None

    @property
    def display(self) -> str:
        """What to show now: the stored reply as checked, else the text streamed so far (or, once the
        content check stopped it, a notice: the flagged text never reaches the screen)."""
        if self.shown is not None:
            return self.shown
        return WITHHELD_WHILE_STREAMING if self.stopped else self.text


def start_replies(
    messages: Sequence[ChatMessage], starters: Iterable[Callable[[Sequence[ChatMessage]], Stream]]
) -> list[Reply]:
    """Start one reply per starter; when one cannot start, cancel those already started (they hold
    model instances) and re-raise."""
    replies: list[Reply] = []
    try:
        for start in starters:
            replies.append(Reply(start(messages)))
    except BaseException:
        for reply in replies:
            reply.stream.cancel()
        raise
    return replies


# -- the interleaver ------------------------------------------------------------------------------
class _Ended(enum.Enum):
    END = "end"


END = _Ended.END  # what ``Interleaved.with_ends`` yields for a source that has ended


class Interleaved(Generic[T]):
    """Iterate for ``(source index, item)`` in arrival order until every source has ended.

    Each source is drained by its own thread, so a slow one never holds back the others. A source that
    raises simply ends here; its owner sees the error when it asks for the result (``Generation.wait()``
    and ``PresetRun.wait()`` re-raise it). A consumer that stops early must cancel the sources and
    ``join()`` before reading their results, so that no two threads read one stream.
    """

    def __init__(self, sources: Sequence[Iterable[T]]):
        self._merged: queue.SimpleQueue[tuple[int, T | _Ended]] = queue.SimpleQueue()
        self._remaining = len(sources)
        self._threads = [
            threading.Thread(target=self._pump, args=(i, s), name=f"stream-{i}", daemon=True)
            for i, s in enumerate(sources)
        ]
        for t in self._threads:
            t.start()

    def _pump(self, index: int, source: Iterable[T]) -> None:
        try:
            for item in source:
                self._merged.put((index, item))
        except Exception:  # noqa: S110 (reported by the source's own result)
            pass
        finally:
            self._merged.put((index, END))

    def with_ends(self) -> Iterator[tuple[int, T | _Ended]]:
        """As iterating, and also ``(index, END)`` when source ``index`` has ended (finished, failed or
        cancelled): for a consumer that answers each source's end at once."""
        while self._remaining:
            index, item = self._merged.get()
            if item is END:
                self._remaining -= 1
            yield index, item

    def __iter__(self) -> Iterator[tuple[int, T]]:
        for index, item in self.with_ends():
            if not isinstance(item, _Ended):
                yield index, item

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every pump to finish; False if one is still running after ``timeout``."""
        for t in self._threads:
            t.join(timeout)
        return not any(self.alive())

    def alive(self) -> list[bool]:
        return [t.is_alive() for t in self._threads]


def finish(replies: Sequence[Reply], merged: Interleaved, timeout: float = FINISH_TIMEOUT_S) -> None:
    """Stop what still runs, wait for the pumps, and set each reply's ``result`` (left None when it
    failed, with ``error`` when it raised, or when it is still stuck after ``timeout``). Safe to call
    from a ``finally`` after the consumer stopped."""
    for reply in replies:
        reply.stream.cancel()  # no-op for a finished one; frees the model instances of a stopped one
    if not merged.join(timeout):
        log.warning("a generation did not stop within %.0f s; its reply is not stored", timeout)
    for reply, alive in zip(replies, merged.alive(), strict=True):
        if alive:
            continue
        try:
            reply.result = reply.stream.wait()
        except GenerationError as exc:
            log.warning("generation failed: %s", exc)
            reply.error = exc


# -- one round --------------------------------------------------------------------------------------
def stream_replies(
    safety: Safety,
    replies: Sequence[Reply],
    render: Callable[[], T],
    *,
    on_item: Callable[[int, str | Event], None] | None = None,
    render_interval_s: float = 0.0,
) -> Iterator[T]:
    """Stream ``replies`` together, yielding ``render()`` as they grow, and finish them (on the end, on
    an error, and when the consumer closes this generator: the Stop button). ``on_item(index, item)``
    sees every piece or event first (e.g. to show a preset's trace).

    At most one render per ``render_interval_s`` (the first is never held back): every update costs
    server CPU that the model needs. Before each render, each reply whose text changed goes through
    ``safety.check_stream``: a flagged one is cancelled and marked ``stopped``, so its text never
    reaches the screen; once every reply is stopped there is nothing left to show.
    """
    merged: Interleaved[str | Event] = Interleaved([reply.stream for reply in replies])
    checked = [""] * len(replies)
    shown_at = float("-inf")
    try:
        for index, item in merged:
            reply = replies[index]
            reply.text = reply.text + item if isinstance(item, str) else item.answer_after(reply.text)
            if on_item is not None:
                on_item(index, item)
            now = time.perf_counter()
            if now - shown_at < render_interval_s:
                continue
            shown_at = now
            for i, other in enumerate(replies):
                if not other.stopped and other.text != checked[i]:
                    checked[i] = other.text
                    if safety.check_stream(other.text):
                        other.stopped = True
                        other.stream.cancel()
            if all(r.stopped for r in replies):
                break
            yield render()
    finally:
        finish(replies, merged)


def store_replies(
    store: FeedbackStore,
    safety: Safety,
    conversation_id: str,
    parent_id: int | None,
    replies: Sequence[Reply],
    *,
    report_hint: bool = False,
) -> None:
    """Check each finished reply with ``safety.check_output`` and store it under ``parent_id`` with the
    decision, setting its ``shown`` and ``message_id``. A failed reply (no result) is not stored."""
    for reply in replies:
        if reply.result is None:
            continue
        check = safety.check_output(reply.result.text, report_hint=report_hint)
        reply.shown = check.shown
        reply.message_id = store.add_assistant_message(
            conversation_id,
            parent_id,
            turn_record(reply.result, reply.preset_id, reply.trace, moderation=check.moderation),
        )


def run_round(
    store: FeedbackStore,
    safety: Safety,
    conversation_id: str,
    parent_id: int | None,
    replies: Sequence[Reply],
    render: Callable[[], T],
    *,
    on_item: Callable[[int, str | Event], None] | None = None,
    render_interval_s: float = 0.0,
    report_hint: bool = False,
) -> Iterator[T]:
    """``stream_replies``, then ``store_replies``: a reply stopped by the user (the generator closed)
    is stored too, with what was generated. Afterwards each reply says what became of it."""
    try:
        yield from stream_replies(
            safety, replies, render, on_item=on_item, render_interval_s=render_interval_s
        )
    finally:
        store_replies(store, safety, conversation_id, parent_id, replies, report_hint=report_hint)


def answer_prompt(
    store: FeedbackStore, safety: Safety, asked: Prompt, replies: Sequence[Reply], render: Callable[[], T]
) -> Iterator[T]:
    """``run_round`` for the replies to ``asked`` (what ``start_prompt`` stored and returned)."""
    return run_round(store, safety, asked.conversation_id, asked.message_id, replies, render)
