"""SQLite connections for the feedback store: one connection per thread, WAL, foreign keys on,
and write transactions that take the write lock up front (BEGIN IMMEDIATE).

Why each setting (see shared/FACTS.md, measured on this machine):
- WAL + synchronous=NORMAL: readers never block the writer; ~60x faster than synchronous=FULL and
  still durable across a process kill (only an OS crash can lose the last transactions).
- foreign_keys=ON must be set on every connection; SQLite does not remember it.
- sqlite-utils' ``db.atomic()`` starts a DEFERRED transaction whose read-to-write upgrade fails at
  once with "database is locked" under concurrent writers; BEGIN IMMEDIATE waits for the busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_S = 30.0


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with milliseconds: sortable as text, readable by people."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def open_database(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database file with the pragmas every connection needs."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return sqlite_utils.Database(conn)


class ConnectionPool:
    """One sqlite-utils Database per thread for one file (sqlite3 connections are not shareable)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = open_database(self.path)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

        Nested use inside an open transaction becomes a savepoint (sqlite-utils' ``atomic``).
        """
        db = self.get()
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    db.close()
            self._all.clear()
        self._local = threading.local()
