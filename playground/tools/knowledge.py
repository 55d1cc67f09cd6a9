"""The knowledge-base search tool: SQLite FTS5 over short text notes.

Sources are the notes shipped with the project (``playground/knowledge/*.md``) and the user's own
``.md``/``.txt`` files (a directory setting, or uploaded in the Chat tab). The index lives in its own
SQLite file and is refreshed incrementally: a file is re-read only when its content hash changed, and
rows of deleted files are dropped. Markdown files are split at headings, text files at blank lines.

The model's query is never passed to FTS5 as query syntax: it is reduced to plain words, each quoted.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from playground.tools import ToolError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "knowledge"
SUFFIXES = (".md", ".txt")
MAX_FILE_BYTES = 1_000_000
MAX_CHUNK_CHARS = 1200
MAX_QUERY_WORDS = 12
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "you",
        "your",
        "me",
        "my",
        "tell",
        "about",
        "please",
        "find",
        "search",
        "look",
        "up",
        "give",
    ]
)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS sources (path TEXT PRIMARY KEY, digest TEXT NOT NULL, chunks INTEGER NOT NULL)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(title, body, source UNINDEXED, "
    "tokenize = 'porter unicode61')",
]


@dataclass(frozen=True)
class Hit:
    title: str
    body: str
    source: str
    score: float


@dataclass(frozen=True)
class IndexReport:
    files: int
    added: int
    updated: int
    removed: int
    chunks: int
    errors: tuple[str, ...] = ()


def chunk_text(text: str, fallback_title: str, *, markdown: bool) -> list[tuple[str, str]]:
    """(title, body) pieces: one per Markdown section, or paragraphs packed up to MAX_CHUNK_CHARS."""
    pieces: list[tuple[str, str]] = []
    if markdown:
        title, lines = fallback_title, []
        for line in text.splitlines():
            heading = re.match(r"^#{1,6}\s+(.*\S)\s*$", line)
            if heading:
                if "".join(lines).strip():
                    pieces.append((title, "\n".join(lines).strip()))
                title, lines = heading.group(1), []
            else:
                lines.append(line)
        if "".join(lines).strip():
            pieces.append((title, "\n".join(lines).strip()))
    else:
        body = ""
        for para in re.split(r"\n\s*\n", text):
            para = para.strip()
            if not para:
                continue
            if body and len(body) + len(para) > MAX_CHUNK_CHARS:
                pieces.append((fallback_title, body))
                body = ""
            body = f"{body}\n\n{para}" if body else para
        if body:
            pieces.append((fallback_title, body))
    # A very long section is cut into windows so that one hit never floods the model's context.
    out = []
    for title, body in pieces:
        for start in range(0, len(body), MAX_CHUNK_CHARS):
            out.append((title, body[start : start + MAX_CHUNK_CHARS]))
    return out


def query_words(query: str) -> list[str]:
    """Plain lower-case words of the query, stopwords dropped; no FTS5 syntax survives."""
    words = []
    for word in re.findall(r"\w+", query.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()) and word not in words:
            words.append(word)
    return words[:MAX_QUERY_WORDS]


class KnowledgeBase:
    """A searchable index of text notes (the ``search`` tool). Safe to share between threads."""

    name = "search"
    description = "search[query]: looks up facts in the local knowledge base and returns the best notes"

    def __init__(self, db_path: str | Path, sources: Sequence[str | Path] = (BUNDLED_DIR,)):
        self.db_path = Path(db_path)
        self.sources = [Path(s) for s in sources]
        self._refresh_lock = threading.Lock()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per call: searches come from many worker threads.
        with closing(sqlite3.connect(self.db_path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            with db:
                yield db

    # -- indexing ------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        found: list[Path] = []
        for source in self.sources:
            if source.is_file() and source.suffix.lower() in SUFFIXES:
                found.append(source)
            elif source.is_dir():
                found.extend(
                    sorted(p for p in source.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
                )
        return found

    def refresh(self) -> IndexReport:
        """Bring the index up to date with the source files (only changed files are re-read)."""
        with self._refresh_lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            known = dict(db.execute("SELECT path, digest FROM sources").fetchall())
            seen: set[str] = set()
            added = updated = 0
            errors: list[str] = []
            for path in self.files():
                key = str(path.resolve())
                try:
                    raw = path.read_bytes()
                    if len(raw) > MAX_FILE_BYTES:
                        raise ValueError(f"larger than {MAX_FILE_BYTES // 1000} kB")
                except (OSError, ValueError) as exc:
                    errors.append(f"{path}: {exc}")
                    continue
                seen.add(key)
                digest = hashlib.sha256(raw).hexdigest()
                if known.get(key) == digest:
                    continue
                text = raw.decode("utf-8", errors="replace")
                pieces = chunk_text(text, path.stem.replace("_", " "), markdown=path.suffix.lower() == ".md")
                db.execute("DELETE FROM chunks WHERE source = ?", [key])
                db.executemany(
                    "INSERT INTO chunks (title, body, source) VALUES (?, ?, ?)",
                    [(title, body, key) for title, body in pieces],
                )
                db.execute(
                    "INSERT INTO sources (path, digest, chunks) VALUES (?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET digest = excluded.digest, chunks = excluded.chunks",
                    [key, digest, len(pieces)],
                )
                if key in known:
                    updated += 1
                else:
                    added += 1
            gone = [p for p in known if p not in seen]
            for key in gone:
                db.execute("DELETE FROM chunks WHERE source = ?", [key])
                db.execute("DELETE FROM sources WHERE path = ?", [key])
            total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return IndexReport(len(seen), added, updated, len(gone), total, tuple(errors))

    def add_file(self, path: str | Path, user_dir: str | Path) -> Path:
        """Copy a user's text file into ``user_dir`` (one of the sources) and index it."""
        src, user_dir = Path(path), Path(user_dir)
        if src.suffix.lower() not in SUFFIXES:
            raise ToolError(f"{src.name}: only {' and '.join(SUFFIXES)} files can be added")
        if src.stat().st_size > MAX_FILE_BYTES:
            raise ToolError(f"{src.name} is larger than {MAX_FILE_BYTES // 1000} kB")
        user_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]", "_", src.name).lstrip(".") or "notes.txt"
        dest = user_dir / name
        shutil.copyfile(src, dest)
        self.refresh()
        return dest

    def count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    # -- searching -----------------------------------------------------------------------------------
    def search(self, query: str, limit: int = 3) -> list[Hit]:
        words = query_words(query)
        if not words:
            raise ToolError("search needs a few words to look for, e.g. search[boiling point of water]")
        match = " OR ".join(f'"{w}"' for w in words)  # words are \w+ only: no quotes can appear
        with self._connect() as db:
            rows = db.execute(
                "SELECT title, body, source, bm25(chunks, 4.0, 1.0) AS score FROM chunks "
                "WHERE chunks MATCH ? ORDER BY score LIMIT ?",
                [match, limit],
            ).fetchall()
        return [Hit(title, body, source, score) for title, body, source, score in rows]

    def run(self, arg: str) -> str:
        hits = self.search(arg)
        if not hits:
            return f"No notes found for {arg.strip()!r} in the knowledge base."
        return "\n".join(f"[{i}] {h.title}: {_one_line(h.body, 400)}" for i, h in enumerate(hits, 1))


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
