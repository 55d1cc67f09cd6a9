"""The typed API of the feedback store: conversations, messages and model versions.

Every write is one ``BEGIN IMMEDIATE`` transaction on the calling thread's own connection, so the store
can be shared by the web server's worker threads. All SQL is parameterised. This package imports
nothing from ``models`` or ``playground``: it stores plain values.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback_store.db import ConnectionPool, utc_now
from feedback_store.migrations import MIGRATIONS
from feedback_store.text import is_storable, storable

VERSION_STATUSES = ("candidate", "deployed", "retired", "rejected")
ROLES = ("system", "user", "assistant")


def _dumps(value: Any) -> str | None:
    return None if value is None else storable(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _loads(value: str | None) -> Any:
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
        row["metrics"] = _loads(row["metrics"]) or {}
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
            row[key] = _loads(row[key])
        return cls(**row)


class StoreError(ValueError):
    """A request the store refuses (unknown ids, bad values); the message says what to fix."""


class FeedbackStore:
    """The SQLite feedback database. Create one per process; it is safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pool = ConnectionPool(self.path)
        MIGRATIONS.apply(self._pool.get())

    def close(self) -> None:
        self._pool.close()

    # -- low level -------------------------------------------------------------------------------
    @property
    def db(self):
        """This thread's sqlite-utils Database (for reads and for modules extending the store)."""
        return self._pool.get()

    def write(self):
        """A BEGIN IMMEDIATE transaction on this thread's connection (context manager)."""
        return self._pool.write()

    def count(self, table: str) -> int:
        return self.db[table].count

    @property
    def versions(self):
        """The model version registry (register candidates, deploy, roll back): feedback_store.versions."""
        from feedback_store.versions import VersionRegistry

        return VersionRegistry(self)

    # -- model versions --------------------------------------------------------------------------
    def ensure_base_version(self, base_model: str, name: str | None = None) -> ModelVersion:
        """Return the base version (no adapter) of ``base_model``, creating it on first use.

        A new base version is deployed when nothing else is deployed for that base model, so a fresh
        database serves version 1 = the base model.
        """
        with self.write() as db:
            row = next(
                db.query(
                    "SELECT * FROM model_versions WHERE base_model = ? AND adapter_path IS NULL "
                    "ORDER BY id LIMIT 1",
                    [base_model],
                ),
                None,
            )
            if row is None:
                deployed = next(
                    db.query(
                        "SELECT id FROM model_versions WHERE base_model = ? AND status = 'deployed'",
                        [base_model],
                    ),
                    None,
                )
                now = utc_now()
                db.execute(
                    "INSERT INTO model_versions (name, base_model, status, created_at, deployed_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        name or f"{base_model} (base)",
                        base_model,
                        "retired" if deployed else "deployed",
                        now,
                        None if deployed else now,
                    ],
                )
                row = next(
                    db.query(
                        "SELECT * FROM model_versions WHERE base_model = ? AND adapter_path IS NULL "
                        "ORDER BY id LIMIT 1",
                        [base_model],
                    )
                )
        return ModelVersion.from_row(row)

    def get_version(self, version_id: int) -> ModelVersion:
        row = next(self.db.query("SELECT * FROM model_versions WHERE id = ?", [version_id]), None)
        if row is None:
            raise StoreError(f"No model version {version_id}; `python launch.py versions` lists them.")
        return ModelVersion.from_row(row)

    def deployed_version(self, base_model: str) -> ModelVersion | None:
        row = next(
            self.db.query(
                "SELECT * FROM model_versions WHERE base_model = ? AND status = 'deployed'",
                [base_model],
            ),
            None,
        )
        return None if row is None else ModelVersion.from_row(row)

    def list_versions(self, base_model: str | None = None) -> list[ModelVersion]:
        if base_model is None:
            rows = self.db.query("SELECT * FROM model_versions ORDER BY id")
        else:
            rows = self.db.query(
                "SELECT * FROM model_versions WHERE base_model = ? ORDER BY id", [base_model]
            )
        return [ModelVersion.from_row(r) for r in rows]

    # -- conversations and messages --------------------------------------------------------------
    def create_conversation(
        self,
        user_id: str,
        *,
        source: str = "ui",
        system_prompt: str | None = None,
        conversation_id: str | None = None,
    ) -> str:
        if not is_storable(user_id) or not is_storable(source) or not is_storable(conversation_id or ""):
            raise StoreError(
                "user_id, source and conversation_id must be text without NULs or lone surrogates"
            )
        conversation_id = conversation_id or uuid.uuid4().hex
        with self.write() as db:
            db.execute(
                "INSERT INTO conversations (id, user_id, source, system_prompt, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
                [
                    conversation_id,
                    user_id,
                    source,
                    None if system_prompt is None else storable(system_prompt),
                    utc_now(),
                ],
            )
        return conversation_id

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        row = next(self.db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]), None)
        if row is None:
            raise StoreError(f"No conversation {conversation_id!r}.")
        return row

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        parent_id: int | None = None,
        turn: AssistantTurn | None = None,
        moderation: dict[str, Any] | None = None,
    ) -> int:
        """Append a message; for assistant replies ``turn`` carries the generation record.
        ``moderation`` is the moderation decision on the text (``{"flagged": bool, ...}``); for a reply
        it may come in ``turn.moderation`` instead. Text SQLite cannot hold (NUL, lone surrogates) is
        made storable (feedback_store.text)."""
        if role not in ROLES:
            raise StoreError(f"role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise StoreError("message content must be text")
        if parent_id is not None and (
            isinstance(parent_id, bool) or not isinstance(parent_id, int) or not -(2**63) <= parent_id < 2**63
        ):
            raise StoreError(f"parent_id must be a message id, got {parent_id!r}")
        values: dict[str, Any] = {
            "conversation_id": conversation_id,
            "parent_id": parent_id,
            "role": role,
            "content": storable(content),
            "created_at": utc_now(),
        }
        if turn is not None:
            values.update(
                model_version_id=turn.model_version_id,
                preset_id=turn.preset_id,
                params=_dumps(turn.params),
                prompt=turn.prompt,
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                ttft_ms=turn.ttft_ms,
                tokens_per_s=turn.tokens_per_s,
                total_ms=turn.total_ms,
                finish_reason=turn.finish_reason,
                moderation=_dumps(turn.moderation),
                trace=_dumps(turn.trace),
            )
            if turn.prompt is not None:
                values["prompt"] = storable(turn.prompt)
        if moderation is not None:
            values["moderation"] = _dumps(moderation)
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            with self.write() as db:
                cursor = db.execute(
                    f"INSERT INTO messages ({columns}) VALUES ({marks})",  # noqa: S608 (column names are ours)
                    list(values.values()),
                )
                return int(cursor.lastrowid)
        except Exception as exc:  # sqlite3.IntegrityError: unknown conversation / parent / version
            if "FOREIGN KEY" in str(exc):
                raise StoreError(
                    f"message refers to an unknown conversation, parent or model version: {exc}"
                ) from exc
            raise

    def add_assistant_message(self, conversation_id: str, parent_id: int | None, turn: AssistantTurn) -> int:
        return self.add_message(conversation_id, "assistant", turn.content, parent_id=parent_id, turn=turn)

    def get_message(self, message_id: int) -> StoredMessage:
        if (
            isinstance(message_id, bool)
            or not isinstance(message_id, int)
            or not -(2**63) <= message_id < 2**63
        ):
            raise StoreError(f"No message {message_id!r}.")
        row = next(self.db.query("SELECT * FROM messages WHERE id = ?", [message_id]), None)
        if row is None:
            raise StoreError(f"No message {message_id}.")
        return StoredMessage.from_row(row)

    def conversation_messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = self.db.query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
        )
        return [StoredMessage.from_row(r) for r in rows]
