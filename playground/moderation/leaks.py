"""Prompt-leak guard: find the secrets in a system prompt and keep them out of a reply, even while it
streams. Used by the injection-defended preset as its last line of defence (a small model obeys
"never reveal the code" unreliably; redacting its output does not depend on the model).

What counts as a secret in a system prompt:
- a value introduced as one: "the code is X", "password: X", "API key = X", "secret ... is X";
- a code-like token: letters and digits mixed, 6+ characters (ZEBRA-7741, sk-abc123..., a hex key).
A secret is also found in a reply written with other separators or case ("zebra 7741"), and its
digit-bearing parts alone ("7741") count when they are 4+ characters long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REDACTED = "[redacted]"
_INTRODUCED = re.compile(
    r"\b(?:code|password|passcode|passphrase|pin|key|token|secret)\b[^.\n:=]{0,30}?(?:\bis\b|:|=)\s*[\"'`]?"
    r"([^\s\"'`,;]{4,})",
    re.IGNORECASE,
)
_CODE_LIKE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{4,}[A-Za-z0-9](?![\w-])")


def secrets_in(system_prompt: str | None) -> list[str]:
    """The secrets of ``system_prompt`` (longest first)."""
    if not system_prompt:
        return []
    found = {m.group(1).rstrip(".") for m in _INTRODUCED.finditer(system_prompt)}
    found |= {m.group(0) for m in _CODE_LIKE.finditer(system_prompt)}
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _pattern(secrets: list[str]) -> re.Pattern | None:
    alternatives: set[str] = set()
    for secret in secrets:
        parts = [p for p in re.split(r"[\W_]+", secret) if p]
        if not parts:
            continue
        alternatives.add(r"[\W_]*".join(re.escape(p) for p in parts))
        alternatives.update(re.escape(p) for p in parts if len(p) >= 4 and any(ch.isdigit() for ch in p))
    if not alternatives:
        return None
    return re.compile("|".join(sorted(alternatives, key=len, reverse=True)), re.IGNORECASE)


@dataclass
class LeakGuard:
    """Redacts the secrets of one system prompt from replies; ``stream()`` for a streamed reply."""

    secrets: list[str]
    pattern: re.Pattern | None = field(init=False)

    def __post_init__(self) -> None:
        self.pattern = _pattern(self.secrets)

    @classmethod
    def for_system_prompt(cls, system_prompt: str | None) -> LeakGuard:
        return cls(secrets_in(system_prompt))

    @property
    def active(self) -> bool:
        return self.pattern is not None

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with every secret replaced, and how many were."""
        if self.pattern is None:
            return text, 0
        return self.pattern.subn(REDACTED, text)

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Feed it a reply piece by piece; it hands back text that is safe to show. It holds back a tail as
    long as the longest secret (plus separators), so a secret split across pieces is still caught."""

    def __init__(self, guard: LeakGuard):
        self.guard = guard
        self.hold = max((len(s) for s in guard.secrets), default=0) * 2 + 8
        self.pending = ""
        self.redactions = 0

    def feed(self, piece: str) -> str:
        if not self.guard.active:
            return piece
        self.pending += piece
        text, n = self.guard.redact(self.pending)
        self.redactions += n
        if len(text) <= self.hold:
            self.pending = text
            return ""
        # The held tail is longer than any secret, so a secret still arriving is never cut; cutting
        # at a space keeps the shown text tidy.
        cut = end = len(text) - self.hold
        while cut > 0 and not text[cut - 1].isspace():
            cut -= 1
        cut = cut or end
        out, self.pending = text[:cut], text[cut:]
        return out

    def flush(self) -> str:
        text, n = self.guard.redact(self.pending)
        self.redactions += n
        self.pending = ""
        return text
