"""The store's record types and its error: what the repositories return and raise. Imports nothing of
the store, so that every module of the package can use them without an import cycle."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from feedback_store.text import storable

VERSION_STATUSES = ("candidate", "deployed", "retired", "rejected")
ROLES = ("system", "user", "assistant")
JSON_COLUMNS = ("params", "moderation", "trace")  # of a message: stored as JSON text


def dumps(value: Any) -> str | None:
    return None if value is None else storable(json.dumps(value, ensure_ascii=False, sort_keys=True))


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def loads_tuple(value: str) -> tuple[Any, ...]:
    """A stored JSON list as a tuple."""
    return tuple(json.loads(value))


class FromRow:
    """A record read from a row of its table: each column named in ``decoders`` is turned into the
    field's value by its function (JSON text, SQLite's 0/1 for a bool); the others are taken as stored."""

    decoders: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        row = dict(row)
        for key, decode in cls.decoders.items():
            row[key] = decode(row[key])
        return cls(**row)


@dataclass(frozen=True)
class ModelVersion(FromRow):
    """A row of ``model_versions``: a base model, or a LoRA adapter trained on one."""

    id: int
    name: str
    base_model: str
    """The served base file or directory the version runs on (its adapter was trained on it)."""
    status: str
    """"candidate", "deployed" (one per base model), "retired" or "rejected"."""
    created_at: str
    adapter_path: str | None = None
    """The PEFT adapter directory (None for the base itself)."""
    gguf_adapter_path: str | None = None
    """The same adapter converted for llama.cpp, which serves it."""
    parent_id: int | None = None
    """The version it was trained from (rollback returns to it)."""
    training_run_id: int | None = None
    method: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None
    deployed_at: str | None = None

    decoders = {"metrics": lambda value: loads(value) or {}}


@dataclass(frozen=True, kw_only=True)
class ReplyRecord:
    """How a reply was generated and what it cost: the columns of ``messages`` that only an assistant
    reply fills (``None`` on user and system messages)."""

    preset_id: str | None = None
    params: dict[str, Any] | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    total_ms: float | None = None
    finish_reason: str | None = None
    moderation: dict[str, Any] | None = None
    trace: Any = None


@dataclass(frozen=True)
class AssistantTurn(ReplyRecord):
    """What the serving layer knows about one generated reply, as stored with the message."""

    content: str
    model_version_id: int | None


@dataclass(frozen=True)
class StoredMessage(ReplyRecord, FromRow):
    id: int
    conversation_id: str
    parent_id: int | None
    role: str
    content: str
    created_at: str
    model_version_id: int | None = None

    decoders = dict.fromkeys(JSON_COLUMNS, loads)


class StoreError(ValueError):
    """A request the store refuses (unknown ids, bad values); the message says what to fix."""
