"""Rules-file changes proposed from users' reports on the content filter, for the Dashboard's review
queue: pure functions from a reported text and the operator's rules file to a proposed file, its
unified diff, and whether the change would have decided the text the other way.

- "The filter was wrong" (a false positive): an allow-list entry in each category that fired, made of
  the matched words and a few words around them (``CONTEXT_WORDS``), so that this use is allowed and
  other uses of the same words are still caught. A reply gets ``allow_output`` (outputs only), a user
  message ``allow``.
- "This should have been blocked" (a false negative): a pattern for the text's first words
  (``PHRASE_WORDS``), in the category the reporter named if the rules know it, else in a category
  ``reported`` the file creates (action "block", inputs and outputs).

Patterns match the normalised text (``rules.normalise``), words joined by ``\\W+`` so that spacing and
punctuation do not matter. The file is edited with tomlkit, which keeps the operator's comments and
layout, and written atomically (``write_rules_file``) after the merged rules load.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit

from playground.moderation.base import Kind
from playground.moderation.rules import ModerationConfigError, RuleModerator, normalise, text_variants

CONTEXT_WORDS = 2  # words kept on each side of a wrongly flagged match in its allow-list entry
PHRASE_WORDS = 12  # words of a missed text in its proposed pattern
REPORTED_CATEGORY = "reported"
_WORD = re.compile(r"\w+(?:['-]\w+)*")

Key = Literal["allow", "allow_output", "patterns"]


@dataclass(frozen=True)
class RuleChange:
    """One entry added to ``[categories.CATEGORY].KEY``; ``create`` holds the settings of a category the
    file does not have yet."""

    category: str
    key: Key
    entry: str
    create: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "key": self.key, "entry": self.entry, "create": self.create}


@dataclass(frozen=True)
class Proposal:
    path: Path
    changes: tuple[RuleChange, ...]
    old_text: str  # the operator's file now ("" if it does not exist yet)
    new_text: str
    diff: str
    effective: bool  # with the change, the filter decides the reported text the other way
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "changes": [c.to_dict() for c in self.changes],
            "effective": self.effective,
        }


def read_rules_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _phrase(words: list[str]) -> str:
    return r"\b" + r"\W+".join(re.escape(w) for w in words) + r"\b"


def allow_entry(text: str, matched: str) -> str | None:
    """An allow-list regex for the match ``matched`` in ``text``: its words and ``CONTEXT_WORDS`` on each
    side, as matched in the normalised text (or its leetspeak-undone variant, where the match was)."""
    needle = normalise(matched)
    for variant in text_variants(text):
        at = variant.find(needle)
        if at < 0:
            continue
        words = list(_WORD.finditer(variant))
        inside = [i for i, w in enumerate(words) if w.start() < at + len(needle) and at < w.end()]
        if not inside:
            return None
        first = max(0, inside[0] - CONTEXT_WORDS)
        last = min(len(words), inside[-1] + 1 + CONTEXT_WORDS)
        return _phrase([w.group(0) for w in words[first:last]])
    return None


def phrase_pattern(text: str) -> str | None:
    """A pattern for the first ``PHRASE_WORDS`` words of ``text`` (None: it has no words)."""
    words = _WORD.findall(normalise(text))[:PHRASE_WORDS]
    return _phrase(words) if words else None


def apply_changes(file_text: str, changes: tuple[RuleChange, ...]) -> str:
    """The rules file with ``changes`` added (an entry already there is not added twice)."""
    doc = tomlkit.parse(file_text) if file_text.strip() else tomlkit.document()
    if "categories" not in doc:
        doc["categories"] = tomlkit.table(is_super_table=True)
    categories = doc["categories"]
    for change in changes:
        if change.category not in categories:
            table = tomlkit.table()
            for key, value in change.create.items():
                table[key] = value
            categories[change.category] = table
        table = categories[change.category]
        if change.key not in table:
            table[change.key] = tomlkit.array()
        entries = table[change.key]
        if change.entry not in [str(e) for e in entries]:
            literal = "'" not in change.entry and "\n" not in change.entry  # no escaping needed
            entries.append(tomlkit.string(change.entry, literal=literal))
    return tomlkit.dumps(doc)


def unified_diff(old: str, new: str, path: Path) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (now)",
            tofile=f"{path} (accepted)",
        )
    )


def propose(
    text: str,
    kind: Kind,
    report: str,
    path: Path,
    *,
    categories: tuple[str, ...] = (),
) -> tuple[Proposal | None, str]:
    """(proposal, explanation) for a ``report`` ("false_positive" / "false_negative") on ``text``
    (a user's ``input`` or a model's ``output``), against the rules as the file ``path`` makes them now.
    No proposal when the current rules already decide the text as the report asks, or nothing in the
    text can be turned into a rule; the explanation says why."""
    old_text = read_rules_file(path)
    rules = RuleModerator.from_texts((old_text, str(path))) if old_text else RuleModerator.from_texts()
    now = rules.moderate(text, kind=kind)
    changes: list[RuleChange] = []
    if report == "false_positive":
        if not now.flagged:
            return None, "The current rules do not flag this text: nothing to change."
        key: Key = "allow_output" if kind == "output" else "allow"
        for match in now.matches:
            entry = allow_entry(text, match.text)
            if entry is not None:
                changes.append(RuleChange(match.category, key, entry))
        what = "allow this use of the words that matched"
    elif report == "false_negative":
        if now.flagged:
            return None, f"The current rules already flag this text ({now.describe()}): nothing to add."
        entry = phrase_pattern(text)
        if entry is not None:
            named = [c for c in categories if c in rules.categories]
            category = named[0] if named else REPORTED_CATEGORY
            create = {} if category in rules.categories else {"action": "block"}
            changes.append(RuleChange(category, "patterns", entry, create))
        what = "block texts with these words"
    else:
        raise ValueError(f"report must be false_positive or false_negative, got {report!r}")
    if not changes:
        return None, "Nothing in this text can be made into a rule."
    new_text = apply_changes(old_text, tuple(changes))
    if new_text == old_text:
        return None, "The rules file already has this change."
    after = RuleModerator.from_texts((new_text, str(path))).moderate(text, kind=kind)
    effective = after.flagged == (report == "false_negative")
    explanation = f"Proposed: {what}." + (
        ""
        if effective
        else " Even with it, the filter would decide this text as it did: edit the file by hand."
    )
    diff = unified_diff(old_text, new_text, path)
    return Proposal(path, tuple(changes), old_text, new_text, diff, effective, explanation), explanation


def write_rules_file(path: Path, text: str) -> None:
    """Write the operator's rules file atomically (a temporary file beside it, then a rename), after
    checking that the built-in rules merged with ``text`` load; raises ModerationConfigError if not."""
    RuleModerator.from_texts((text, str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "ModerationConfigError",
    "Proposal",
    "RuleChange",
    "allow_entry",
    "apply_changes",
    "phrase_pattern",
    "propose",
    "unified_diff",
    "write_rules_file",
]
