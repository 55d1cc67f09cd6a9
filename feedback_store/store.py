"""The feedback store: one object that owns the SQLite connections, stores conversations and messages
itself, and exposes a typed repository for each other family of tables: ``store.versions``,
``store.runs``, ``store.feedback``, ``store.hygiene``, ``store.conversations`` (a user's history,
renaming, deletion, retention, "my data"), ``store.canaries`` (the users' votes on a candidate). The
readers built on them (training datasets, exports, imports, statistics) take the store.

Every write is one ``BEGIN IMMEDIATE`` transaction on the calling thread's own connection, so the store
can be shared by the web server's worker threads. All SQL is parameterised. This package imports
nothing of ours above it: it stores plain values.
"""

from __future__ import annotations

import uuid
from dataclasses import fields
from functools import cached_property
from pathlib import Path
from typing import Any

from feedback_store.canary import CanaryRepository
from feedback_store.conversations import ConversationRepository
from feedback_store.db import ConnectionPool, utc_now
from feedback_store.feedback import FeedbackRepository
from feedback_store.hygiene import HygieneRepository
from feedback_store.migrations import MIGRATIONS
from feedback_store.records import (
    JSON_COLUMNS,
    ROLES,
    VERSION_STATUSES,
    AssistantTurn,
    ModelVersion,
    StoredMessage,
    StoreError,
)
from feedback_store.records import dumps as _dumps
from feedback_store.runs import TrainingRuns
from feedback_store.text import is_storable, storable
from feedback_store.versions import VersionRegistry

__all__ = [
    "ROLES",
    "VERSION_STATUSES",
    "AssistantTurn",
    "FeedbackStore",
    "ModelVersion",
    "StoreError",
    "StoredMessage",
]


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

    def read(self):
        """One read snapshot on this thread's connection for several queries (context manager)."""
        return self._pool.read()

    def count(self, table: str) -> int:
        return self.db[table].count

    # -- the repositories: each table family is read and written by one of them ----------------------
    @cached_property
    def versions(self) -> VersionRegistry:
        """Model versions: the base, candidates, deploy, roll back (the only door to ``model_versions``)."""
        return VersionRegistry(self._pool)

    @cached_property
    def runs(self) -> TrainingRuns:
        """Training runs and deployment events."""
        return TrainingRuns(self._pool)

    @cached_property
    def feedback(self) -> FeedbackRepository:
        """Thumbs, ratings, better answers, A/B votes and rankings."""
        return FeedbackRepository(self._pool)

    @cached_property
    def hygiene(self) -> HygieneRepository:
        """Reports on the content filter, safety events, excluded users: what training leaves out."""
        return HygieneRepository(self._pool)

    @cached_property
    def conversations(self) -> ConversationRepository:
        """Each user's own conversations: history, search, rename, delete, retention, export."""
        return ConversationRepository(self._pool)

    @cached_property
    def canaries(self) -> CanaryRepository:
        """Canary battles: a candidate before the users in a share of anonymous battles, and the tally."""
        return CanaryRepository(self._pool)

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
            # every field of the turn but its text (``content``, above) is a column of messages
            values.update((f.name, getattr(turn, f.name)) for f in fields(turn) if f.name != "content")
            for key in JSON_COLUMNS:
                values[key] = _dumps(values[key])
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
