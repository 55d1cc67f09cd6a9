"""Conversations people come back to: each user's history, renaming, deleting, retention and "my data".

``store.conversations`` (``ConversationRepository``). Every call that names a conversation also names
the user asking, and the row is looked up by both: a conversation of someone else answers exactly as
one that does not exist (``ConversationNotFound``, the same words), so ids cannot be probed. Ids are
uuid4 hex (122 random bits), so they cannot be guessed either.

Deleting is a hard delete, in one ``BEGIN IMMEDIATE`` transaction, never a tombstone:

- the user's words must really go: a tombstone keeps the text (or needs every reader, export and
  statistic, present and future, to remember a filter); a deleted row cannot leak;
- the foreign keys already say what depends on a message (feedback, better answers and their
  moderation, A/B votes, rankings, reports: ``ON DELETE CASCADE``), so one ``DELETE`` on the
  conversation removes the feedback on it too; a ranking that loses one of its replies goes whole (it
  would rank other things than the user ranked);
- a training cycle reads its datasets in one read snapshot (``datasets``), so it sees a conversation
  entirely or not at all, and every later read (the gate reads its held-out pairs again after training)
  finds nothing to pick up. What a cycle read before the deletion it keeps in memory until it ends;
  the copies it wrote under ``DATA_DIR/runs/`` are scrubbed when the caller names that directory;
- ``PRAGMA secure_delete`` is on for the deletion, so SQLite overwrites the freed pages instead of
  leaving the text in the file's free space.

Each deletion records an event per owner (``deletion_events``): who asked, whose data, when, how many
rows of each kind; no ids and no text. It keeps the count of the owner's flagged messages, which the
training hygiene still counts (``hygiene.user_records``), so deleting abuse does not lift an exclusion.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.feedback import _check_user
from feedback_store.hygiene import FLAGGED_SQL
from feedback_store.jsonl import scrub_jsonl, write_jsonl
from feedback_store.records import StoredMessage, StoreError
from feedback_store.text import is_storable, storable

HISTORY_SOURCES = ("ui",)  # the Chat tab's conversations; Compare and Rank rounds are not chats to resume
DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000
MAX_TITLE_CHARS = 200
MAX_SEARCH_CHARS = 200
TITLE_PREVIEW_CHARS = 60
WITHHELD = "[withheld by the content filter]"
COUNT_KEYS = (
    "conversations",
    "messages",
    "feedback",
    "demonstrations",
    "comparisons",
    "rankings",
    "reports",
    "flagged",
)


class ConversationNotFound(StoreError):
    """No such conversation among the asking user's own (whether it exists for someone else or not)."""

    def __init__(self) -> None:
        super().__init__("No such conversation: it was deleted, or it is not yours.")


def title_from(text: str | None, limit: int = TITLE_PREVIEW_CHARS) -> str:
    """A one-line title from a message: whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join((text or "").split())
    if not text:
        return "(empty conversation)"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class ConversationSummary:
    """One line of a user's history."""

    id: str
    title: str  # the user's title, else the first message's first words
    custom_title: bool  # True when the user renamed it
    source: str
    created_at: str
    updated_at: str  # the last message's time
    messages: int
    version_id: int | None  # the model version of the latest reply
    version_name: str | None


@dataclass(frozen=True)
class OpenedConversation:
    """A conversation to restore: its row and every stored message (all branches), oldest first."""

    summary: ConversationSummary
    system_prompt: str | None
    messages: list[StoredMessage]


@dataclass(frozen=True)
class Deletion:
    """What a deletion removed (rows of each kind), and the lines scrubbed from run copies."""

    conversations: int = 0
    messages: int = 0
    feedback: int = 0
    demonstrations: int = 0
    comparisons: int = 0
    rankings: int = 0
    reports: int = 0
    flagged: int = 0  # of the deleted rows, the owners' flagged messages (kept as a count)
    scrubbed_lines: int = 0

    def describe(self) -> str:
        parts = [f"{self.conversations} conversation(s)", f"{self.messages} message(s)"]
        rated = self.feedback + self.demonstrations + self.comparisons + self.rankings + self.reports
        parts.append(f"{rated} feedback row(s)")
        return ", ".join(parts)


@dataclass(frozen=True)
class DeletionEvent:
    id: int
    actor: str
    scope: str  # conversation | user | retention
    user_id: str | None
    counts: dict[str, int]
    created_at: str


def _conversation_id(value: Any) -> str:
    """The id as the store keeps it; anything that cannot be one is simply not found."""
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not is_storable(value):
        raise ConversationNotFound()
    return value


def _scalar(db, sql: str, args: Sequence[Any]) -> int:
    return int(db.conn.execute(sql, list(args)).fetchone()[0])


class ConversationRepository(Repository):
    """A user's own conversations: list, search, open, rename, delete; all of a user's data (export,
    delete); retention. Every method that names a conversation checks that it belongs to ``user_id``."""

    # -- reading -----------------------------------------------------------------------------------
    def list_for_user(
        self,
        user_id: str,
        *,
        search: str | None = None,
        limit: int = DEFAULT_LIMIT,
        sources: Sequence[str] = HISTORY_SOURCES,
    ) -> list[ConversationSummary]:
        """The user's conversations with at least one message, most recent activity first. ``search``
        keeps those whose title or any message contains the text (case-insensitive for ASCII)."""
        _check_user(user_id)
        sources = [sources] if isinstance(sources, str) else list(sources)
        where = ["c.user_id = ?", f"c.source IN ({', '.join('?' for _ in sources)})"]
        args: list[Any] = [user_id, *sources]
        needle = storable(search or "").strip()[:MAX_SEARCH_CHARS]
        if needle:
            where.append(
                "(instr(lower(coalesce(c.title, '')), lower(?)) > 0 OR EXISTS (SELECT 1 FROM messages m "
                "WHERE m.conversation_id = c.id AND instr(lower(m.content), lower(?)) > 0))"
            )
            args += [needle, needle]
        else:
            where.append("EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)")
        with self.read() as db:
            return self._summaries(db, " AND ".join(where), args, max(1, min(int(limit), MAX_LIMIT)))

    def count_for_user(self, user_id: str, *, sources: Sequence[str] = HISTORY_SOURCES) -> int:
        """How many conversations (with messages) ``list_for_user`` could show."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        return _scalar(
            self.db,
            f"SELECT COUNT(*) FROM conversations c WHERE c.user_id = ? AND c.source IN "  # noqa: S608 (placeholders only)
            f"({', '.join('?' for _ in sources)}) "
            "AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)",
            [user_id, *sources],
        )

    def summary(self, conversation_id: str, user_id: str) -> ConversationSummary:
        """One line of the user's history (``ConversationNotFound`` if not theirs)."""
        _check_user(user_id)
        with self.read() as db:
            row = self._owned(db, conversation_id, user_id)
            return self._summaries(db, "c.id = ?", [row["id"]], 1)[0]

    def _summaries(self, db, where: str, args: list[Any], limit: int) -> list[ConversationSummary]:
        query = (
            "SELECT c.id, c.title, c.source, c.created_at, c.updated_at, "  # noqa: S608 (our own fragments; values are bound)
            " (SELECT substr(m.content, 1, 400) FROM messages m WHERE m.conversation_id = c.id"
            "  AND m.role = 'user' ORDER BY m.id LIMIT 1) AS first_message,"
            " (SELECT m.model_version_id FROM messages m WHERE m.conversation_id = c.id"
            "  AND m.role = 'assistant' ORDER BY m.id DESC LIMIT 1) AS version_id,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n_messages "
            f"FROM conversations c WHERE {where} "
            "ORDER BY c.updated_at DESC, c.created_at DESC, c.id LIMIT ?"
        )
        rows = db.conn.execute(query, [*args, limit]).fetchall()
        names = self._version_names(db, {r[6] for r in rows if r[6] is not None})
        return [
            ConversationSummary(
                id=r[0],
                title=r[1] or title_from(r[5]),
                custom_title=r[1] is not None,
                source=r[2],
                created_at=r[3],
                updated_at=r[4] or r[3],
                messages=r[7],
                version_id=r[6],
                version_name=names.get(r[6]),
            )
            for r in rows
        ]

    @staticmethod
    def _version_names(db, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = db.conn.execute(
            "SELECT id, name FROM model_versions WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted(ids))],
        )
        return dict(rows.fetchall())

    def _owned(self, db, conversation_id: Any, user_id: str) -> dict[str, Any]:
        conversation_id = _conversation_id(conversation_id)
        cursor = db.conn.execute(
            "SELECT * FROM conversations WHERE id = ? AND user_id = ?", [conversation_id, user_id]
        )
        row = cursor.fetchone()
        if row is None:
            raise ConversationNotFound()
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def open(self, conversation_id: str, user_id: str) -> OpenedConversation:
        """Every message of the user's conversation (all branches), to restore it."""
        _check_user(user_id)
        with self.read() as db:
            row = self._owned(db, conversation_id, user_id)
            cursor = db.conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [row["id"]]
            )
            keys = [d[0] for d in cursor.description]
            messages = [StoredMessage.from_row(dict(zip(keys, r, strict=True))) for r in cursor]
            version_id = next((m.model_version_id for m in reversed(messages) if m.role == "assistant"), None)
            names = self._version_names(db, {version_id} if version_id is not None else set())
        first_user = next((m.content for m in messages if m.role == "user"), None)
        summary = ConversationSummary(
            id=row["id"],
            title=row["title"] or title_from(first_user),
            custom_title=row["title"] is not None,
            source=row["source"],
            created_at=row["created_at"],
            updated_at=row["updated_at"] or row["created_at"],
            messages=len(messages),
            version_id=version_id,
            version_name=names.get(version_id),
        )
        return OpenedConversation(summary, row["system_prompt"], messages)

    # -- renaming ----------------------------------------------------------------------------------
    def rename(self, conversation_id: str, user_id: str, title: str | None) -> str:
        """Set the user's title (empty or None: back to the first message). Returns the title shown."""
        _check_user(user_id)
        if title is not None and not isinstance(title, str):
            raise StoreError("a title is text")
        clean = " ".join(storable(title or "").split()) or None
        if clean is not None and len(clean) > MAX_TITLE_CHARS:
            raise StoreError(f"the title has {len(clean):,} characters; at most {MAX_TITLE_CHARS}")
        with self.write() as db:
            row = self._owned(db, conversation_id, user_id)
            db.conn.execute("UPDATE conversations SET title = ? WHERE id = ?", [clean, row["id"]])
            first = db.conn.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY id LIMIT 1",
                [row["id"]],
            ).fetchone()
        return clean or title_from(first[0] if first else None)

    # -- deleting ----------------------------------------------------------------------------------
    def delete(
        self,
        conversation_id: str,
        user_id: str,
        *,
        actor: str | None = None,
        scrub_dirs: Sequence[str | Path] = (),
    ) -> Deletion:
        """Delete the user's conversation with everything that refers to its messages (see the module
        docstring), record the event, and scrub its text from the JSONL files under ``scrub_dirs``."""
        _check_user(user_id)
        texts: set[str] | None = set() if scrub_dirs else None
        with self.write() as db, _secure_delete(db):
            row = self._owned(db, conversation_id, user_id)
            counts = _purge_conversations(db, [row["id"]], user_id, texts)
            _record(db, actor or user_id, "conversation", user_id, counts)
        return _finish(counts, texts, scrub_dirs)

    def delete_user_data(
        self, user_id: str, *, actor: str | None = None, scrub_dirs: Sequence[str | Path] = ()
    ) -> Deletion:
        """Delete every conversation of ``user_id`` (all sources: Chat, Compare, Rank, API) and every
        row the user wrote about anyone's messages (feedback, better answers, votes, rankings, reports).
        Kept: operators' decisions about the user and rate-limit events (no text; they keep abuse out
        of training) and the deletion events."""
        _check_user(user_id)
        texts: set[str] | None = set() if scrub_dirs else None
        with self.write() as db, _secure_delete(db):
            ids = [r[0] for r in db.conn.execute("SELECT id FROM conversations WHERE user_id = ?", [user_id])]
            counts = _purge_conversations(db, ids, user_id, texts)
            counts += _purge_user_rows(db, user_id, texts)
            _record(db, actor or user_id, "user", user_id, counts)
        return _finish(counts, texts, scrub_dirs)

    def delete_older_than(
        self,
        days: float,
        *,
        now: datetime | None = None,
        actor: str = "retention",
        scrub_dirs: Sequence[str | Path] = (),
    ) -> Deletion:
        """Retention: delete every conversation (any user, any source) whose last message is more than
        ``days`` days old, with everything that refers to it; one event per owner."""
        if isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0:
            raise StoreError(f"retention needs a positive number of days, got {days!r}")
        cutoff = ((now or datetime.now(UTC)) - timedelta(days=days)).astimezone(UTC)
        cutoff_text = cutoff.isoformat(timespec="milliseconds")
        texts: set[str] | None = set() if scrub_dirs else None
        total: Counter = Counter()
        with self.write() as db, _secure_delete(db):
            owners: dict[str, list[str]] = {}
            for cid, owner in db.conn.execute(
                "SELECT id, user_id FROM conversations WHERE coalesce(updated_at, created_at) < ?",
                [cutoff_text],
            ):
                owners.setdefault(owner, []).append(cid)
            for owner, ids in sorted(owners.items()):
                counts = _purge_conversations(db, ids, owner, texts)
                _record(db, actor, "retention", owner, counts)
                total += counts
        return _finish(total, texts, scrub_dirs)

    def deletion_events(self, *, user_id: str | None = None, limit: int = 100) -> list[DeletionEvent]:
        """The most recent deletions first (for operators: counts only)."""
        where, args = ("WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        rows = self.db.conn.execute(
            f"SELECT id, actor, scope, user_id, counts, created_at FROM deletion_events {where} "  # noqa: S608 (a constant)
            "ORDER BY id DESC LIMIT ?",
            [*args, int(limit)],
        )
        return [DeletionEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    # -- my data -----------------------------------------------------------------------------------
    def user_rows(self, user_id: str) -> Iterator[dict[str, Any]]:
        """Everything stored of ``user_id``, one dict per line: each conversation with all its messages
        (every source, every branch), then the user's feedback, better answers, votes, rankings and
        reports (which name messages by id; a message of someone else is never included)."""
        _check_user(user_id)
        with self.read() as db:
            yield from self._user_rows(db, user_id)

    def _user_rows(self, db, user_id: str) -> Iterator[dict[str, Any]]:
        conversations = db.conn.execute(
            "SELECT id, source, title, system_prompt, created_at, updated_at FROM conversations "
            "WHERE user_id = ? ORDER BY created_at, id",
            [user_id],
        ).fetchall()
        for cid, source, title, system_prompt, created_at, updated_at in conversations:
            cursor = db.conn.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [cid])
            keys = [d[0] for d in cursor.description]
            messages = [
                _as_owner_sees(StoredMessage.from_row(dict(zip(keys, r, strict=True)))) for r in cursor
            ]
            yield {
                "type": "conversation",
                "id": cid,
                "source": source,
                "title": title,
                "system_prompt": system_prompt,
                "created_at": created_at,
                "updated_at": updated_at,
                "messages": messages,
            }
        for kind, table, decode in (
            ("feedback", "feedback", ("reasons", "flags")),
            ("better_answer", "demonstrations", ()),
            ("vote", "comparisons", ("differed",)),
            ("report", "moderation_reports", ("categories",)),
        ):
            cursor = db.conn.execute(f"SELECT * FROM {table} WHERE user_id = ? ORDER BY id", [user_id])  # noqa: S608 (our table names)
            keys = [d[0] for d in cursor.description]
            for r in cursor.fetchall():
                row = dict(zip(keys, r, strict=True))
                for key in decode:
                    row[key] = json.loads(row[key])
                yield {"type": kind, **row}
        for rid, prompt_id, created_at, updated_at in db.conn.execute(
            "SELECT id, prompt_message_id, created_at, updated_at FROM rankings WHERE user_id = ? ORDER BY id",
            [user_id],
        ).fetchall():
            items = db.conn.execute(
                "SELECT message_id, COALESCE(rank, position) FROM ranking_items WHERE ranking_id = ? "
                "ORDER BY position",
                [rid],
            ).fetchall()
            yield {
                "type": "ranking",
                "id": rid,
                "user_id": user_id,
                "prompt_message_id": prompt_id,
                "message_ids": [r[0] for r in items],
                "ranks": [r[1] for r in items],
                "created_at": created_at,
                "updated_at": updated_at,
            }

    def export_user(self, user_id: str, path: str | Path) -> int:
        """Write ``user_rows`` to ``path`` as JSONL (whole or not at all); returns the number of lines."""
        return write_jsonl(Path(path), self.user_rows(user_id))


def _as_owner_sees(message: StoredMessage) -> dict[str, Any]:
    """A message for its owner's download: a reply the content filter withheld stays withheld (its text
    and its trace, which may hold the same text, are left out; the store keeps them for review)."""
    row = asdict(message)
    if (message.moderation or {}).get("action") == "withheld":
        row.update(content=WITHHELD, trace=None)
    return row


# -- the deletion itself (inside the caller's write transaction) -------------------------------------
@contextlib.contextmanager
def _secure_delete(db) -> Iterator[None]:
    """``PRAGMA secure_delete=ON`` on this connection for one deletion, then back to what it was."""
    before = int(db.conn.execute("PRAGMA secure_delete").fetchone()[0])
    db.conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        db.conn.execute(f"PRAGMA secure_delete = {1 if before else 0}")


def _purge_conversations(db, ids: list[str], owner: str, texts: set[str] | None) -> Counter:
    """Delete conversations ``ids`` (all owned by ``owner``) and what refers to their messages."""
    counts: Counter = Counter()
    if not ids:
        return counts
    conn = db.conn
    # The ids go into temporary tables (this connection only) so every statement below is a constant.
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_conversations (id TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_messages (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.purge_conversations")
    conn.execute("DELETE FROM temp.purge_messages")
    conn.executemany("INSERT OR IGNORE INTO temp.purge_conversations (id) VALUES (?)", [(i,) for i in ids])
    conn.execute(
        "INSERT INTO temp.purge_messages (id) SELECT id FROM messages "
        "WHERE conversation_id IN temp.purge_conversations"
    )
    counts["conversations"] = _scalar(db, "SELECT COUNT(*) FROM temp.purge_conversations", [])
    counts["messages"] = _scalar(db, "SELECT COUNT(*) FROM temp.purge_messages", [])
    counts["flagged"] = _scalar(
        db,
        "SELECT COUNT(*) FROM messages m WHERE m.id IN temp.purge_messages AND m.role = 'user' "  # noqa: S608 (a constant)
        f"AND {FLAGGED_SQL.format(t='m')}",
        [],
    ) + _scalar(
        db,
        "SELECT COUNT(*) FROM demonstrations d JOIN demonstration_moderation dm ON dm.demonstration_id = d.id "
        "WHERE dm.flagged = 1 AND d.user_id = ? AND d.message_id IN temp.purge_messages",
        [owner],
    )
    for key, sql in (
        ("feedback", "SELECT COUNT(*) FROM feedback WHERE message_id IN temp.purge_messages"),
        ("demonstrations", "SELECT COUNT(*) FROM demonstrations WHERE message_id IN temp.purge_messages"),
        (
            "comparisons",
            "SELECT COUNT(*) FROM comparisons "
            "WHERE message_a IN temp.purge_messages OR message_b IN temp.purge_messages",
        ),
        (
            "rankings",
            "SELECT COUNT(*) FROM rankings WHERE prompt_message_id IN temp.purge_messages "
            "OR id IN (SELECT ranking_id FROM ranking_items WHERE message_id IN temp.purge_messages)",
        ),
        ("reports", "SELECT COUNT(*) FROM moderation_reports WHERE message_id IN temp.purge_messages"),
    ):
        counts[key] = _scalar(db, sql, [])
    if texts is not None:
        texts.update(
            r[0] for r in conn.execute("SELECT content FROM messages WHERE id IN temp.purge_messages")
        )
        texts.update(
            r[0]
            for r in conn.execute(
                "SELECT content FROM demonstrations WHERE message_id IN temp.purge_messages"
            )
        )
    # A ranking that loses one of its replies goes whole; the cascade would only drop the item.
    conn.execute(
        "DELETE FROM rankings WHERE id IN "
        "(SELECT ranking_id FROM ranking_items WHERE message_id IN temp.purge_messages)"
    )
    # messages.parent_id has no ON DELETE: a message elsewhere that names one of these as its parent
    # (nothing we write does) would block the delete; it becomes a root instead.
    conn.execute(
        "UPDATE messages SET parent_id = NULL WHERE parent_id IN temp.purge_messages "
        "AND id NOT IN temp.purge_messages"
    )
    conn.execute("DELETE FROM conversations WHERE id IN temp.purge_conversations")  # cascades
    conn.execute("DELETE FROM temp.purge_conversations")
    conn.execute("DELETE FROM temp.purge_messages")
    return counts


def _purge_user_rows(db, user_id: str, texts: set[str] | None) -> Counter:
    """The rows ``user_id`` wrote about messages of other conversations (after ``_purge_conversations``
    took those on their own)."""
    counts: Counter = Counter()
    counts["flagged"] = _scalar(
        db,
        "SELECT COUNT(*) FROM demonstrations d JOIN demonstration_moderation dm ON dm.demonstration_id = d.id "
        "WHERE dm.flagged = 1 AND d.user_id = ?",
        [user_id],
    )
    if texts is not None:
        texts.update(
            r[0] for r in db.conn.execute("SELECT content FROM demonstrations WHERE user_id = ?", [user_id])
        )
    for key, table in (
        ("feedback", "feedback"),
        ("demonstrations", "demonstrations"),
        ("comparisons", "comparisons"),
        ("rankings", "rankings"),
        ("reports", "moderation_reports"),
    ):
        counts[key] = db.conn.execute(f"DELETE FROM {table} WHERE user_id = ?", [user_id]).rowcount  # noqa: S608 (our table names)
    return counts


def _record(db, actor: str, scope: str, user_id: str | None, counts: Counter) -> None:
    db.conn.execute(
        "INSERT INTO deletion_events (actor, scope, user_id, counts, created_at) VALUES (?, ?, ?, ?, ?)",
        [
            storable(actor),
            scope,
            user_id,
            json.dumps({k: int(counts.get(k, 0)) for k in COUNT_KEYS}),
            utc_now(),
        ],
    )


def _finish(counts: Counter, texts: set[str] | None, scrub_dirs: Sequence[str | Path]) -> Deletion:
    scrubbed = sum(scrub_jsonl(d, frozenset(texts or ())) for d in scrub_dirs) if texts else 0
    return Deletion(**{k: int(counts.get(k, 0)) for k in COUNT_KEYS}, scrubbed_lines=scrubbed)
