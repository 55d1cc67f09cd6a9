"""The default moderator: configurable word lists and regular expressions per category, read from
``rules.toml`` (next to this module) merged with the operator's own file (DATA_DIR/moderation.toml or
``--moderation-file``). The file format is documented at the top of ``rules.toml``.

Text is normalised before matching (NFKC, case folded, zero-width characters removed, whitespace
collapsed, curly quotes straightened) and matched a second time with leetspeak undone, so "k1ll" and
"ｋｉｌｌ" count as "kill". Allow-lists catch benign uses ("kill the process", "bath bomb"): a match that
overlaps an allowed span is ignored. Each match records the rule that fired as written in its file
(``Match.pattern``), so the Dashboard's review queue can show it.

``ReloadingRules`` is the moderator a server runs: the same rules, re-read from the operator's file on
``reload()`` (the review queue calls it after writing an accepted change), so a change takes effect
without a restart; a file that does not load leaves the running rules in place.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from playground.moderation.base import Kind, Match, ModerationResult

log = logging.getLogger(__name__)

BUILTIN_RULES = "rules.toml"
ACTIONS = ("block", "mark")
KINDS = ("input", "output")
MAX_CHARS = 200_000  # longer texts are moderated on their first and last 100k characters
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u02bc": "'"})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACES = re.compile(r"[^\S\n]+")


class ModerationConfigError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).translate(_QUOTES).casefold()
    return _SPACES.sub(" ", text)


def text_variants(text: str) -> list[str]:
    """What the rules match: the normalised text, and again with leetspeak undone if that differs."""
    plain = normalise(text)
    undone = plain.translate(_LEET)
    return [plain] if undone == plain else [plain, undone]


@dataclass
class CategoryRules:
    name: str
    action: str = "block"
    applies_to: tuple[str, ...] = KINDS
    enabled: bool = True
    words: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    allow_output: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Compiled:
    name: str
    block: bool
    applies_to: tuple[str, ...]
    rules: tuple[tuple[str, str, re.Pattern], ...]  # (rule description, as written, regex)
    allow: tuple[re.Pattern, ...]
    allow_output: tuple[re.Pattern, ...]


def _word_regex(words: Iterable[str]) -> str:
    alternatives = sorted({w.strip().casefold() for w in words if w.strip()}, key=len, reverse=True)
    escaped = (r"\s+".join(re.escape(part) for part in w.split()) for w in alternatives)
    return r"\b(?:" + "|".join(escaped) + r")(?:s|es)?\b"


class RuleModerator:
    """Regex/word-list moderation; cheap enough to run on every streamed update of a reply."""

    name = "rules"

    def __init__(self, categories: dict[str, CategoryRules], lists: dict[str, list[str]] | None = None):
        self.categories = categories
        self.lists = lists or {}
        self._compiled = [self._compile(c) for c in categories.values() if c.enabled]

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, *paths: str | Path | None) -> RuleModerator:
        """The built-in rules merged with each existing file of ``paths`` (None entries are skipped)."""
        sources: list[tuple[str, str]] = []
        for path in paths:
            if path is None:
                continue
            path = Path(path)
            try:
                sources.append((path.read_text(encoding="utf-8"), str(path)))
            except (OSError, UnicodeDecodeError) as exc:
                raise ModerationConfigError(f"cannot read the moderation file {path}: {exc}") from exc
        return cls.from_texts(*sources)

    @classmethod
    def from_texts(cls, *sources: tuple[str, str]) -> RuleModerator:
        """The built-in rules merged with each (TOML text, where it comes from) of ``sources``: how a
        proposed rules file is checked before it is written."""
        builtin = resources.files("playground.moderation").joinpath(BUILTIN_RULES).read_text(encoding="utf-8")
        data = _parse(builtin, BUILTIN_RULES)
        categories: dict[str, CategoryRules] = {}
        lists: dict[str, list[str]] = {}
        _merge(categories, lists, data, BUILTIN_RULES)
        for text, where in sources:
            _merge(categories, lists, _parse(text, where), where)
        try:
            return cls(categories, lists)
        except ModerationConfigError as exc:  # a bad regex: say which files were merged
            files = ", ".join(where for _, where in sources) or BUILTIN_RULES
            raise ModerationConfigError(f"{files}: {exc}") from None

    def _expand(self, pattern: str) -> str:
        def sub(m: re.Match) -> str:
            name = m.group(1)
            if name not in self.lists:
                return m.group(0)  # a regex repetition like {2,3}, not a list
            return "(?:" + "|".join(self.lists[name]) + ")"

        return re.sub(r"\{([a-z_]+)\}", sub, pattern)

    def _compile(self, c: CategoryRules) -> _Compiled:
        def compile_(pattern: str, where: str) -> re.Pattern:
            try:
                return re.compile(self._expand(pattern), re.IGNORECASE)
            except re.error as exc:
                raise ModerationConfigError(
                    f"categories.{c.name}.{where}: not a valid regular expression ({exc}): {pattern!r}"
                ) from exc

        rules: list[tuple[str, str, re.Pattern]] = []
        if c.words:
            rules.append(("word list", "", re.compile(_word_regex(c.words))))
        rules.extend((f"pattern {i + 1}", p, compile_(p, f"patterns[{i}]")) for i, p in enumerate(c.patterns))
        return _Compiled(
            c.name,
            c.action == "block",
            c.applies_to,
            tuple(rules),
            tuple(compile_(p, f"allow[{i}]") for i, p in enumerate(c.allow)),
            tuple(compile_(p, f"allow_output[{i}]") for i, p in enumerate(c.allow_output)),
        )

    # -- moderation ----------------------------------------------------------------------------------
    def moderate(self, text: str, *, kind: Kind = "input") -> ModerationResult:
        if not text or not text.strip():
            return ModerationResult(False, moderator=self.name)
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2 :]
        variants = text_variants(text)
        matches: list[Match] = []
        for cat in self._compiled:
            if kind not in cat.applies_to:
                continue
            found = self._first_match(cat, variants, kind)
            if found is not None:
                matches.append(found)
        categories = tuple(dict.fromkeys(m.category for m in matches))
        block = any(c.block for c in self._compiled if c.name in categories)
        return ModerationResult(bool(matches), categories, block, tuple(matches), self.name)

    @staticmethod
    def _first_match(cat: _Compiled, variants: list[str], kind: str) -> Match | None:
        allows = cat.allow + (cat.allow_output if kind == "output" else ())
        for text in variants:
            allowed = [m.span() for a in allows for m in a.finditer(text)]
            for rule, written, regex in cat.rules:
                for m in regex.finditer(text):
                    if not any(start < m.end() and m.start() < end for start, end in allowed):
                        # a word list names the word that matched (the list may be long)
                        return Match(cat.name, m.group(0), rule, written or m.group(0))
        return None


class ReloadingRules:
    """The rule-based moderator of a running server: the built-in rules merged with the operator's
    file ``path`` (read if it exists), swapped for a fresh copy by ``reload()``. Moderation reads the
    current copy without a lock (one attribute read); reloads are serialised."""

    name = RuleModerator.name

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self.current = self._load()

    def _load(self) -> RuleModerator:
        exists = self.path is not None and self.path.exists()
        return RuleModerator.from_files(self.path if exists else None)

    def reload(self) -> RuleModerator:
        """Re-read the files; raises ModerationConfigError (the running rules stay) if they do not load."""
        with self._lock:
            fresh = self._load()
            self.current = fresh
        log.info("moderation rules reloaded from %s", self.path or BUILTIN_RULES)
        return fresh

    def moderate(self, text: str, *, kind: Kind = "input") -> ModerationResult:
        return self.current.moderate(text, kind=kind)


# -- the rules file ------------------------------------------------------------------------------------
def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModerationConfigError(f"{where} is not valid TOML: {exc}") from exc


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModerationConfigError(f"{where} must be a list of strings")
    return list(value)


def _merge(categories: dict[str, CategoryRules], lists: dict[str, list[str]], data: dict, where: str) -> None:
    unknown = set(data) - {"lists", "categories"}
    if unknown:
        raise ModerationConfigError(
            f"{where}: unknown top-level keys {sorted(unknown)} (use [lists] and [categories.NAME])"
        )
    for name, items in (data.get("lists") or {}).items():
        lists.setdefault(name, []).extend(_strings(items, f"{where}: lists.{name}"))
    raw = data.get("categories") or {}
    if not isinstance(raw, dict):
        raise ModerationConfigError(f"{where}: categories must be tables like [categories.violence]")
    for name, spec in raw.items():
        at = f"{where}: categories.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            raise ModerationConfigError(f"{at}: a category name is lower-case letters, digits and _")
        if not isinstance(spec, dict):
            raise ModerationConfigError(f"{at} must be a table")
        bad = set(spec) - {"action", "applies_to", "enabled", "words", "patterns", "allow", "allow_output"}
        if bad:
            raise ModerationConfigError(f"{at}: unknown keys {sorted(bad)}")
        cat = categories.setdefault(name, CategoryRules(name))
        if "action" in spec:
            if spec["action"] not in ACTIONS:
                raise ModerationConfigError(f"{at}.action must be one of {ACTIONS}, got {spec['action']!r}")
            cat.action = spec["action"]
        if "applies_to" in spec:
            kinds = _strings(spec["applies_to"], f"{at}.applies_to")
            if not kinds or set(kinds) - set(KINDS):
                raise ModerationConfigError(f"{at}.applies_to must list 'input' and/or 'output'")
            cat.applies_to = tuple(kinds)
        if "enabled" in spec:
            if not isinstance(spec["enabled"], bool):
                raise ModerationConfigError(f"{at}.enabled must be true or false")
            cat.enabled = spec["enabled"]
        for key in ("words", "patterns", "allow", "allow_output"):
            if key in spec:
                getattr(cat, key).extend(_strings(spec[key], f"{at}.{key}"))
