"""Running a preset: ``run_preset(preset, messages, params, service) -> PresetRun``.

A ``PresetRun`` runs its technique on a worker thread and hands ``Event``s to whoever iterates it
(answer chunks to stream, trace entries to show). Afterwards it holds the final answer, the final
``GenerationResult``, the full trace (a JSON-serialisable list) and the number of model calls.

- Every model call goes through ``ModelService`` on one version (pinned at the start), so a hot swap
  never mixes two versions inside one run.
- ``cancel()`` (the Stop button) cancels every generation in flight, which gives their model
  instances back to the pool at the next token; the run then ends with what it had.
- Runs are independent: two of them stream at the same time (``playground.replies.Interleaved``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from models.base import ChatMessage, Generation, GenerationError, GenerationResult, SamplingParams
from models.service import ModelService
from playground.presets.events import Event
from playground.presets.schema import Example, Preset
from playground.presets.techniques.common import Conversation
from playground.tools import Tool, default_tools

log = logging.getLogger(__name__)

_END = object()


class RunCancelled(Exception):
    """Raised inside a technique when its run was cancelled; the run ends with what it has."""


class RunContext:
    """What a technique may use: its preset, examples, parameters and tools, and model calls."""

    def __init__(self, run: PresetRun):
        self._run = run
        self.preset = run.preset
        self.examples: list[Example] = list(run.preset.examples)
        self.params = run.params
        self.tools = run.tools

    def call(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams | None = None,
        *,
        stage: str,
        stream: str | Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """One model call. ``stream="answer"`` streams it as the answer, ``"partial"`` as live trace; a
        function gets each piece (e.g. to filter it and pass it on with ``answer_piece``)."""
        return self._run._call(list(messages), params or self.params, stage, stream)

    def call_many(
        self, messages: Sequence[ChatMessage], params_list: Sequence[SamplingParams], *, stage: str
    ) -> Iterator[tuple[int, GenerationResult]]:
        """Several calls on the same messages, generated concurrently; results in order."""
        return self._run._call_many(list(messages), list(params_list), stage)

    def answer_piece(self, piece: str) -> None:
        """Stream a piece of the answer (for techniques that filter what a call streams)."""
        if piece:
            self._run._answer_piece(piece)

    def emit(self, kind: str, text: str = "", *, title: str = "", **data: Any) -> None:
        self._run._emit(Event(kind, text, title, data))

    def notice(self, text: str) -> None:
        self._run._notice(text)

    def finish(self, answer: str, result: GenerationResult | None) -> None:
        """The run's answer and the model call that produced it (its prompt is the one stored)."""
        self._run._finish(answer, result)


class PresetRun(Iterator[Event]):
    """``preset`` started on ``messages`` (the last one is the user's question). ``params`` are the final
    sampling parameters (``preset.sampling(base)`` merges a preset's own); ``examples`` replace the
    preset's; ``tools`` default to the calculator and the clock."""

    def __init__(
        self,
        preset: Preset,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        service: ModelService,
        *,
        tools: Mapping[str, Tool] | None = None,
        examples: Sequence[Example] | None = None,
        version_id: int | None = None,
    ):
        conversation = Conversation.from_messages(messages)  # ValueError now, not on the worker thread
        if conversation.system is None and preset.system_prompt:
            conversation = replace(conversation, system=preset.system_prompt)
        self.preset = preset if examples is None else preset.with_examples(examples)
        self.params = params
        self.tools = dict(tools) if tools is not None else default_tools()
        self.version_id = service.version_id if version_id is None else version_id
        self._service = service

        self.answer = ""
        self.result: GenerationResult | None = None  # final: the answer's call, with run-level timings
        self.last_result: GenerationResult | None = None  # the last model call as it came back
        self.trace: list[dict[str, Any]] = []
        self.notices: list[str] = []
        self.model_calls = 0
        self.error: BaseException | None = None
        self.cancelled = False
        self.started = time.perf_counter()
        self.elapsed_s: float | None = None

        self._answer_chunks: list[str] = []
        self._t_answer: float | None = None
        self._finished = False
        self._consumed_end = False
        self._prompts: dict[str, int] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._active: set[Generation] = set()
        self._thread = threading.Thread(
            target=self._work, args=(conversation,), name=f"preset-{preset.id}", daemon=True
        )
        self._thread.start()

    # -- consumer side -------------------------------------------------------------------------------
    def __iter__(self) -> PresetRun:
        return self

    def __next__(self) -> Event:
        if self._consumed_end:
            raise StopIteration
        return self._take(self._queue.get())

    def _take(self, item: Any) -> Event:
        if item is _END:
            self._consumed_end = True
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def wait(self) -> GenerationResult | None:
        """Consume the remaining events; return the final result (raises the run's error, if any)."""
        for _ in self:
            pass
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        """Stop: cancel every generation in flight (their model instances go back to the pool)."""
        self._cancel.set()
        with self._lock:
            active = list(self._active)
        for generation in active:
            generation.cancel()

    @property
    def done(self) -> bool:
        return self._finished

    # -- worker side ---------------------------------------------------------------------------------
    def _work(self, conversation: Conversation) -> None:
        ctx = RunContext(self)
        completed = False  # a Stop that arrives after the answer was complete changes nothing
        try:
            self.preset.spec.run(ctx, conversation)
            completed = self.result is not None
            if not completed and not self._cancel.is_set():
                raise RuntimeError("the technique ended without an answer")
        except RunCancelled:
            pass
        except GenerationError as exc:
            self.error = exc
        except Exception as exc:  # reported to the consumer as a failed generation, with the reason
            log.exception("preset %s failed", self.preset.id)
            self.error = GenerationError(f"the {self.preset.name} preset failed: {exc}")
        finally:
            if self._cancel.is_set() and self.error is None and not completed:
                self._end_cancelled()
            self._release_all()
            self.elapsed_s = time.perf_counter() - self.started
            self._finished = True
            self._queue.put(_END)

    def _emit(self, event: Event) -> None:
        if event.in_trace:
            self.trace.append(event.to_dict())
        self._queue.put(event)

    def _notice(self, text: str) -> None:
        if text and text not in self.notices:
            self.notices.append(text)
            self._emit(Event("notice", text, "Notice"))

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise RunCancelled

    def _track(self, generation: Generation) -> None:
        with self._lock:
            self._active.add(generation)
        if self._cancel.is_set():  # cancelled between the check and the start
            generation.cancel()

    def _untrack(self, generation: Generation) -> None:
        with self._lock:
            self._active.discard(generation)

    def _release_all(self) -> None:
        with self._lock:
            leftover = list(self._active)
            self._active.clear()
        for generation in leftover:
            generation.cancel()
            with contextlib.suppress(Exception):  # already failing or cancelled: only free the instance
                generation.wait()

    def _answer_piece(self, piece: str) -> None:
        if self._t_answer is None:
            self._t_answer = time.perf_counter()
        self._answer_chunks.append(piece)
        self._queue.put(Event("answer", piece))

    def _call(self, messages: list[ChatMessage], params: SamplingParams, stage: str, stream: Any):
        self._check_cancel()
        generation = self._service.stream(messages, params, version_id=self.version_id)
        self._track(generation)
        try:
            for piece in generation:
                if stream == "answer":
                    self._answer_piece(piece)
                elif stream == "partial":
                    self._queue.put(Event("partial", piece, stage))
                elif callable(stream):
                    stream(piece)
            result = generation.result
        finally:
            self._untrack(generation)
        self._record(stage, result)
        if result.finish_reason == "cancelled" or self._cancel.is_set():
            raise RunCancelled
        return result

    def _call_many(self, messages: list[ChatMessage], params_list: list[SamplingParams], stage: str):
        self._check_cancel()
        generations: list[Generation] = []
        try:
            for params in params_list:
                generation = self._service.stream(messages, params, version_id=self.version_id)
                self._track(generation)
                generations.append(generation)
            for i, generation in enumerate(generations):
                # They all run at once; show each one's text live in turn (later ones catch up at once).
                for piece in generation:
                    self._queue.put(Event("partial", piece, f"{stage} {i + 1} of {len(generations)}"))
                result = generation.result
                self._record(f"{stage} {i + 1}", result)
                if result.finish_reason == "cancelled" or self._cancel.is_set():
                    raise RunCancelled
                yield i, result
        finally:
            for generation in generations:
                generation.cancel()  # no-op for finished ones
                with contextlib.suppress(Exception):  # already failing or cancelled: only free the instance
                    generation.wait()
                self._untrack(generation)

    def _record(self, stage: str, result: GenerationResult) -> None:
        self.model_calls += 1
        self.last_result = result
        for notice in result.notices:
            self._notice(notice)
        data: dict[str, Any] = {
            "stage": stage,
            "call": self.model_calls,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_ms": round(result.total_s * 1000, 1),
            "version_id": result.version_id,
            "temperature": result.params.temperature,
            "seed": result.params.seed,
        }
        if result.prompt in self._prompts:  # e.g. self-consistency samples: store the prompt once
            data["prompt_same_as_call"] = self._prompts[result.prompt]
        else:
            self._prompts[result.prompt] = self.model_calls
            data["prompt"] = result.prompt
        self._emit(Event("model_call", result.text, f"Model call {self.model_calls}: {stage}", data))

    def _finish(self, answer: str, result: GenerationResult | None) -> None:
        streamed = "".join(self._answer_chunks)
        if answer != streamed:
            if streamed and answer.startswith(streamed):
                self._answer_piece(answer[len(streamed) :])
            elif streamed:  # the technique chose another text than it streamed: replace the whole answer
                self._answer_chunks = [answer]
                self._queue.put(Event("answer", answer, data={"replace": True}))
            elif answer:
                self._answer_piece(answer)
        self.answer = answer
        self.result = self._final_result(answer, result or self.last_result)

    def _end_cancelled(self) -> None:
        self.cancelled = True
        self.answer = "".join(self._answer_chunks)
        base = self.last_result
        self.result = (
            None
            if base is None
            else replace(self._final_result(self.answer, base), finish_reason="cancelled")
        )

    def _final_result(self, answer: str, base: GenerationResult | None) -> GenerationResult | None:
        if base is None:
            return None
        now = time.perf_counter()
        return replace(
            base,
            text=answer,
            ttft_s=(self._t_answer - self.started) if self._t_answer is not None else base.ttft_s,
            total_s=now - self.started,
            notices=list(dict.fromkeys([*base.notices, *self.notices])),
        )


run_preset = PresetRun  # the documented way to start a run: construct one
