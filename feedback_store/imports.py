"""Imports of public preference datasets into the store: Anthropic HH-RLHF style JSONL (two full
transcripts, "chosen" and "rejected") and TRL preference JSONL (explicit "prompt" or implicit).

Where imported pairs live: as ordinary rows, so that ``datasets.preference_pairs`` and the prompt list
for online RL read them with no special case. Each pair becomes a conversation with source "import"
(system prompt from a leading system message), its context messages, the two replies as sibling
assistant messages with no model version, and a comparison with vote "a" (A = chosen), mode "import"
and labels "chosen"/"rejected". The conversation id is a hash of the pair, so importing a file twice
(or the same pair from two files) adds nothing the second time: it is counted as a duplicate.

All or nothing: the whole file is parsed first; a line that is not a JSON object (a broken or
truncated file) refuses the import and nothing is written. Lines that are JSON but not a usable pair
are rejected one by one with the reason, and the others are imported in ONE transaction (with
``strict=True`` any rejected line refuses the whole file).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback_store.db import utc_now
from feedback_store.store import FeedbackStore
from feedback_store.text import storable

FORMATS = ("hh-rlhf", "trl-preference")
MAX_TEXT_CHARS = 100_000
MAX_REPORTED = 50
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class RowError(ValueError):
    """A line that is valid JSON but not a usable preference pair."""


@dataclass
class ImportReport:
    path: str
    format: str
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    committed: bool = False
    error: str | None = None  # why nothing was imported

    def summary(self) -> str:
        head = f"{self.path} ({self.format}): {self.lines} lines"
        if not self.committed:
            lines = [f"{head}: NOTHING IMPORTED: {self.error}"]
        else:
            lines = [
                f"{head}: {self.accepted} accepted, {self.duplicates} already imported (skipped), "
                f"{len(self.rejected)} rejected"
            ]
        for number, why in self.rejected[:MAX_REPORTED]:
            lines.append(f"  line {number}: {why}")
        if len(self.rejected) > MAX_REPORTED:
            lines.append(f"  ... and {len(self.rejected) - MAX_REPORTED} more")
        return "\n".join(lines)


# -- parsing -------------------------------------------------------------------------------------------
def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise RowError(f"{what} has {len(value):,} characters; at most {MAX_TEXT_CHARS:,}")
    return storable(value)


def parse_hh_transcript(text: str, what: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: ... \\n\\nAssistant: ...' -> messages."""
    text = _text(text, what)
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(f"{what} is not a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript")
    return [
        {"role": _HH_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": _text(value, what)}]
    if not isinstance(value, list) or not value:
        raise RowError(f"{what} must be text or a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise RowError(f"{what}[{i}] must be a message with role system, user or assistant")
        out.append({"role": m["role"], "content": _text(m.get("content"), f"{what}[{i}].content")})
    return out


def _reply(value: Any, what: str) -> str:
    if isinstance(value, str):
        return _text(value, what)
    msgs = _messages(value, what)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise RowError(f"{what} must be one assistant message (multi-message replies are not supported)")
    return msgs[0]["content"]


def _split_common(chosen: list[dict[str, str]], rejected: list[dict[str, str]]):
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise RowError("chosen and rejected must both end with an assistant reply")
    if chosen[:-1] != rejected[:-1]:
        raise RowError("chosen and rejected differ before their last reply (they must share the prompt)")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def parse_row(row: Any, fmt: str) -> tuple[list[dict[str, str]], str, str]:
    """One JSONL object -> (context messages ending with a user message, chosen, rejected)."""
    if not isinstance(row, dict):
        raise RowError("not a JSON object")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise RowError(f"missing {key!r}")
    if fmt == "hh-rlhf":
        context, chosen, rejected = _split_common(
            parse_hh_transcript(row["chosen"], "chosen"), parse_hh_transcript(row["rejected"], "rejected")
        )
    elif fmt == "trl-preference":
        if "prompt" in row:
            context = _messages(row["prompt"], "prompt")
            chosen, rejected = _reply(row["chosen"], "chosen"), _reply(row["rejected"], "rejected")
        else:  # implicit prompt: two whole conversations
            if isinstance(row["chosen"], str):
                raise RowError("no 'prompt': chosen and rejected must then be whole conversations (lists)")
            context, chosen, rejected = _split_common(
                _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
            )
    else:
        raise ValueError(f"unknown import format {fmt!r}; choose from {FORMATS}")
    if not context or context[-1]["role"] != "user":
        raise RowError("the prompt must end with a user message")
    if not chosen.strip():
        raise RowError("the chosen reply is empty")
    if chosen.strip() == rejected.strip():
        raise RowError("chosen and rejected are identical")
    return context, chosen, rejected


# -- writing -------------------------------------------------------------------------------------------
def _insert_pair(db, context, chosen: str, rejected: str, *, user_id: str, fmt: str, name: str) -> bool:
    """Write one pair (see the module docstring); False if it was imported before."""
    key = hashlib.sha256(json.dumps([context, chosen, rejected], ensure_ascii=False).encode()).hexdigest()
    conversation_id = f"import-{key[:32]}"
    if db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
        return False
    now = utc_now()
    system = context[0]["content"] if context[0]["role"] == "system" else None
    db.execute(
        "INSERT INTO conversations (id, user_id, source, system_prompt, created_at) VALUES (?, ?, 'import', ?, ?)",
        [conversation_id, user_id, system, now],
    )
    parent = None
    for m in context[1:] if system is not None else context:
        parent = db.execute(
            "INSERT INTO messages (conversation_id, parent_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
            [conversation_id, parent, m["role"], m["content"], now],
        ).lastrowid
    ids = [
        db.execute(
            "INSERT INTO messages (conversation_id, parent_id, role, content, finish_reason, created_at) "
            "VALUES (?, ?, 'assistant', ?, 'imported', ?)",
            [conversation_id, parent, text, now],
        ).lastrowid
        for text in (chosen, rejected)
    ]
    db.execute(
        "INSERT INTO comparisons (message_a, message_b, user_id, vote, mode, label_a, label_b, anonymous, "
        "differed, created_at, updated_at) VALUES (?, ?, ?, 'a', 'import', 'chosen', 'rejected', 0, ?, ?, ?)",
        [ids[0], ids[1], user_id, json.dumps({"dataset": fmt, "file": name}), now, now],
    )
    return True


def import_file(
    store: FeedbackStore,
    path: str | Path,
    fmt: str,
    *,
    user_id: str | None = None,
    strict: bool = False,
) -> ImportReport:
    """Import a JSONL file of preference pairs; the report says what was accepted and rejected, why."""
    path = Path(path)
    report = ImportReport(str(path), fmt)
    if fmt not in FORMATS:
        report.error = f"unknown format {fmt!r}; choose from {FORMATS}"
        return report
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.error = f"cannot read the file as UTF-8 text: {exc}"
        return report
    pairs: list[tuple[int, tuple[list[dict[str, str]], str, str]]] = []
    broken: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        report.lines += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            broken.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(row, dict):
            broken.append((number, "not a JSON object"))
            continue
        try:
            pairs.append((number, parse_row(row, fmt)))
        except RowError as exc:
            report.rejected.append((number, str(exc)))
    if broken:
        report.rejected = sorted(broken + report.rejected)
        report.error = f"{len(broken)} line(s) are not JSON objects: the file looks broken or truncated"
        return report
    if strict and report.rejected:
        report.error = f"{len(report.rejected)} line(s) rejected and --strict was given"
        return report
    if report.lines == 0:
        report.error = "the file has no lines"
        return report
    name = storable(path.name)  # a file name with undecodable bytes holds lone surrogates
    user_id = storable(user_id or f"import:{name}")
    try:
        with store.write() as db:  # one transaction: any failure rolls the whole file back
            for _number, (context, chosen, rejected) in pairs:
                if _insert_pair(db, context, chosen, rejected, user_id=user_id, fmt=fmt, name=name):
                    report.accepted += 1
                else:
                    report.duplicates += 1
    except sqlite3.Error as exc:
        report.accepted = report.duplicates = 0
        report.error = f"the database refused the import, nothing was written: {exc}"
        return report
    report.committed = True
    return report
