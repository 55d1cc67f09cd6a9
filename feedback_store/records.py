"""The store's record types and its error: what the repositories return and raise. Imports nothing of
the store, so that every module of the package can use them without an import cycle."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from feedback_store.text import storable

VERSION_STATUSES = ("candidate", "deployed", "retired", "rejected")
ROLES = ("system", "user", "assistant")


def dumps(value: Any) -> str | None:
    return None if value is None else storable(json.dumps(value, ensure_ascii=False, sort_keys=True))


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    base_model: str
    status: str
    created_at: str
    adapter_path: str | None = None
    gguf_adapter_path: str | None = None
    parent_id: int | None = None
    training_run_id: int | None = None
    method: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None
    deployed_at: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelVersion:
        row = dict(row)
        row["metrics"] = loads(row["metrics"]) or {}
        return cls(**row)


@dataclass(frozen=True)
class AssistantTurn:
    """What the serving layer knows about one generated reply, as stored with the message."""

    content: str
    model_version_id: int | None
    params: dict[str, Any] | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    total_ms: float | None = None
    finish_reason: str | None = None
    preset_id: str | None = None
    moderation: dict[str, Any] | None = None
    trace: Any = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: str
    parent_id: int | None
    role: str
    content: str
    created_at: str
    model_version_id: int | None = None
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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredMessage:
        row = dict(row)
        for key in ("params", "moderation", "trace"):
            row[key] = loads(row[key])
        return cls(**row)


class StoreError(ValueError):
    """A request the store refuses (unknown ids, bad values); the message says what to fix."""
