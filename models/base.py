"""The serving contract every backend implements: sampling parameters, a running ``Generation`` and
the ``ChatModel`` protocol.

``SamplingParams.json_schema`` is an output constraint (a JSON Schema the reply must match). A backend
either enforces it (llama.cpp with a grammar, a remote server through ``response_format``) or raises
``UnsupportedParameter`` when the generation is requested: a constraint is never dropped silently.

A ``Generation`` runs its backend call on a worker thread and hands text chunks to the consumer
through a queue. Cancelling it (the Stop button, a closed connection, a dropped iterator) stops the
backend at the next token and always gives the model instance back to its pool, whoever is iterating.
"""

from __future__ import annotations

import abc
import json
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from models.context import FittedPrompt


class ChatMessage(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


class GenerationError(RuntimeError):
    """A generation failed inside the backend."""


class UnsupportedParameter(ValueError):
    """A backend cannot honour a sampling parameter (``param`` names the SamplingParams field).

    Raised when the generation is requested, before anything runs, so the caller can refuse the request
    (the OpenAI API answers 400 naming its own parameter) instead of returning an unconstrained reply.
    """

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


MAX_SCHEMA_CHARS = 64_000  # a grammar is built from the schema per request: keep that bounded
MAX_N = 16  # replies sample_n / stream_n start at once for one request


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters shared by every backend. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # A JSON Schema (as JSON text) the reply must match, e.g. '{"type": "object"}' for "any JSON object".
    # Text, not a dict, so that params stay hashable; backends enforce it or raise UnsupportedParameter.
    json_schema: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (0.0 <= self.temperature <= 5.0) or math.isnan(self.temperature):
            problems.append(f"temperature must be between 0 and 5, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.top_k <= 100_000):
            problems.append(f"top_k must be between 0 (off) and 100000, got {self.top_k}")
        if not (1 <= self.max_new_tokens <= 32_768):
            problems.append(f"max_new_tokens must be between 1 and 32768, got {self.max_new_tokens}")
        if not (0.5 <= self.repetition_penalty <= 2.0):
            problems.append(f"repetition_penalty must be between 0.5 and 2, got {self.repetition_penalty}")
        if self.seed is not None and not (0 <= self.seed < 2**32):
            problems.append(f"seed must be between 0 and 2**32-1, got {self.seed}")
        if len(self.stop) > 8 or any(not s or len(s) > 100 for s in self.stop):
            problems.append("stop: at most 8 non-empty strings of at most 100 characters")
        if self.json_schema is not None:
            problems.extend(_schema_problems(self.json_schema))
        if problems:
            raise ValueError("; ".join(problems))
        # Normalise lists coming from JSON or a UI into a tuple, so params stay hashable.
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_seed(self) -> SamplingParams:
        """The same parameters with a concrete seed, so that a sampled reply can be reproduced."""
        if self.seed is not None or self.greedy:
            return self
        return replace(self, seed=random.randrange(2**32))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the schema as an object (stored turns show the constraint they were made under)."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        if self.json_schema is None:
            del d["json_schema"]  # rows of unconstrained turns stay as they were
        else:
            d["json_schema"] = json.loads(self.json_schema)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingParams:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "stop" in known and known["stop"] is not None:
            known["stop"] = tuple(known["stop"])
        if isinstance(known.get("json_schema"), (dict, bool)):
            known["json_schema"] = json.dumps(known["json_schema"], ensure_ascii=False)
        return cls(**known)


def _schema_problems(text: object) -> list[str]:
    if not isinstance(text, str) or len(text) > MAX_SCHEMA_CHARS:
        return [f"json_schema must be JSON text of at most {MAX_SCHEMA_CHARS:,} characters"]
    try:
        schema = json.loads(text)
    except ValueError as exc:
        return [f"json_schema is not valid JSON: {exc}"]
    return [] if isinstance(schema, dict) else ["json_schema must be a JSON object (a JSON Schema)"]


def sample_seeds(params: SamplingParams, n: int) -> list[int]:
    """The seeds of ``n`` replies to one prompt; raises ValueError when ``n`` replies make no sense.

    A fixed ``params.seed`` gives seed, seed+1, ... so the replies differ but reproduce.
    """
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n must be between 1 and {MAX_N}, got {n}")
    if params.greedy and n > 1:
        raise ValueError(
            "greedy decoding (temperature 0) gives the same reply every time; raise the temperature"
        )
    if params.seed is None:
        return [random.randrange(2**32) for _ in range(n)]
    return [(params.seed + i) % 2**32 for i in range(n)]


@dataclass
class GenerationResult:
    """Everything known about one finished (or cancelled) generation."""

    text: str
    prompt: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"
    params: SamplingParams
    ttft_s: float | None = None  # request -> first token, queueing for a model instance included
    total_s: float = 0.0  # request -> last token
    tokens_per_s: float | None = None  # decode speed after the first token
    queue_s: float = 0.0  # time spent waiting for a free model instance
    notices: list[str] = field(default_factory=list)  # e.g. "history trimmed to fit the context"
    model_name: str = ""
    version_id: int | None = None

    @classmethod
    def timed(
        cls,
        text: str,
        fitted: FittedPrompt,
        params: SamplingParams,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        t_request: float,
        t_start: float,
        t_first: float | None,
        model_name: str,
    ) -> GenerationResult:
        """A backend's result for ``fitted``, ending now: ``t_request`` (the request), ``t_start`` (a
        model instance was free) and ``t_first`` (the first text; None when there was none) are
        ``time.perf_counter()`` readings. Decode speed counts the tokens after the first."""
        t_end = time.perf_counter()
        decode_s = (t_end - t_first) if t_first is not None else 0.0
        n = completion_tokens
        return cls(
            text=text,
            prompt=fitted.prompt,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            finish_reason=finish_reason,
            params=params,
            ttft_s=None if t_first is None else t_first - t_request,
            total_s=t_end - t_request,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            queue_s=t_start - t_request,
            notices=list(fitted.notices),
            model_name=model_name,
        )


class _Done:
    __slots__ = ("result",)

    def __init__(self, result: GenerationResult):
        self.result = result


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


Producer = Callable[[Callable[[str], None], threading.Event], GenerationResult]


class Generation(Iterator[str]):
    """A reply being generated. Iterate for text chunks; afterwards ``result`` holds the record.

    ``cancel()`` stops the backend at the next token; the iterator then ends normally with
    ``result.finish_reason == "cancelled"`` and the partial text.
    """

    def __init__(self, producer: Producer, *, name: str = "generation"):
        self._queue: queue.SimpleQueue[str | _Done | _Failed] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._finished = False
        self._error: BaseException | None = None
        self.result: GenerationResult | None = None
        self.version_id: int | None = None
        self.created = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(producer,), name=name, daemon=True)
        self._thread.start()

    def _run(self, producer: Producer) -> None:
        try:
            result = producer(self._queue.put, self._cancel)
        except BaseException as exc:  # handed to the consumer, who re-raises it
            self._queue.put(_Failed(exc))
        else:
            self._queue.put(_Done(result))

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, str):
            return item
        self._end(item)
        raise StopIteration

    def _end(self, item: _Done | _Failed) -> None:
        self._finished = True
        if isinstance(item, _Failed):
            self._error = item.error
            raise item.error
        self.result = item.result
        if self.version_id is not None:
            self.result.version_id = self.version_id

    def batches(self, min_interval_s: float = 0.0) -> Iterator[str]:
        """The text like iterating, except that whatever arrived while the consumer was busy comes as one
        chunk, and (with ``min_interval_s``) chunks after the first come at most that often. The first
        piece is never delayed. A UI that re-renders per update then pays one update per interval instead
        of one per token, which leaves the CPU to the model."""
        last = 0.0
        while not self._finished:
            parts = [self._queue.get()]
            due = last + min_interval_s if last else 0.0
            while not isinstance(parts[-1], (_Done, _Failed)):
                wait = due - time.perf_counter()
                try:
                    parts.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            end = parts.pop() if isinstance(parts[-1], (_Done, _Failed)) else None
            if parts:
                last = time.perf_counter()
                yield "".join(parts)  # type: ignore[arg-type]
            if end is not None:
                self._end(end)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        """True while the backend is still producing (whether or not anyone reads)."""
        return self._thread.is_alive()

    def wait(self) -> GenerationResult:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        if self._error is not None:
            raise self._error
        assert self.result is not None
        return self.result

    def __del__(self) -> None:  # a consumer that walked away must not hold a model instance
        self._cancel.set()


@runtime_checkable
class ChatModel(Protocol):
    """A chat model a user can talk to. Implementations must be safe to call from many threads."""

    model_id: str  # stable identity of the base model, used as the version registry key
    display_name: str
    context_length: int

    def stream(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation: ...

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> GenerationResult: ...

    def sample_n(
        self, messages: Sequence[ChatMessage], params: SamplingParams, n: int
    ) -> list[GenerationResult]: ...

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


class BaseChatModel(abc.ABC):
    """Shared behaviour of the backends: everything is built on ``stream``."""

    model_id: str
    display_name: str
    context_length: int
    # What the user should know about how the model was loaded (e.g. GPU layers that were not
    # offloaded), for the server to print at start; each is also logged as a warning.
    load_warnings: tuple[str, ...] = ()

    @abc.abstractmethod
    def stream(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation: ...

    @abc.abstractmethod
    def render_prompt(self, messages: Sequence[ChatMessage]) -> str: ...

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free the backend's resources."""

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> GenerationResult:
        """Run one generation to the end (no streaming)."""
        return self.stream(messages, params).wait()

    def sample_n(
        self, messages: Sequence[ChatMessage], params: SamplingParams, n: int
    ) -> list[GenerationResult]:
        """K replies to the same messages, each with its own seed (:func:`sample_seeds`), generated
        concurrently. Concurrency is bounded by the backend's own pool: extra requests queue for an instance.
        """
        generations = [self.stream(messages, replace(params, seed=s)) for s in sample_seeds(params, n)]
        try:
            return [g.wait() for g in generations]
        finally:
            for g in generations:  # one failed: the others must not keep their instances
                g.cancel()
