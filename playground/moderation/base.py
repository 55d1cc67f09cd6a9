"""The moderation interface: a ``Moderator`` looks at a text (a user's input or a model's output) and
returns a ``ModerationResult``: flagged or not, in which categories, whether the flagged categories
ask for blocking (or only marking), and what matched. ``Combined`` runs several moderators as one.

Categories follow the InstructGPT labelers' flags (sexual, violent, self-harm, hate, harmful advice),
plus prompt injection / jailbreak attempts and "unsafe" for a model judge's plain yes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["input", "output"]

CATEGORIES: dict[str, str] = {
    "sexual": "sexual content",
    "violence": "violence or threats",
    "self_harm": "self-harm",
    "hate": "hate against a group",
    "harmful_advice": "dangerous or illegal instructions",
    "prompt_injection": "a prompt-injection or jailbreak attempt",
    "unsafe": "unsafe content (model judge)",
    "reported": "reported by users as harmful",  # patterns added from reports (moderation/review.py)
}
# The InstructGPT flag (feedback_store.feedback.INSTRUCTGPT_FLAGS) each category corresponds to.
INSTRUCTGPT_FLAG: dict[str, str] = {
    "sexual": "sexual_content",
    "violence": "violent_content",
    "self_harm": "encourages_harm",
    "hate": "denigrates_protected_class",
    "harmful_advice": "harmful_advice",
}


def category_label(name: str) -> str:
    return CATEGORIES.get(name, name.replace("_", " "))


@dataclass(frozen=True)
class Match:
    category: str
    text: str  # the matched text, as written
    rule: str  # which rule matched (e.g. "word list", "pattern 3", "model judge")
    pattern: str = ""  # the rule as written in its rules file (a pattern's regex, the word matched)


@dataclass(frozen=True)
class ModerationResult:
    flagged: bool
    categories: tuple[str, ...] = ()
    block: bool = False  # a flagged category asks for blocking (else: answer/show, but mark)
    matches: tuple[Match, ...] = ()
    moderator: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored with a message (feedback_store reads "flagged" and "categories")."""
        out: dict[str, Any] = {
            "flagged": self.flagged,
            "categories": list(self.categories),
            "block": self.block,
            "moderator": self.moderator,
        }
        if self.matches:
            out["matches"] = [
                {"category": m.category, "text": m.text[:80], "rule": m.rule}
                | ({"pattern": m.pattern[:300]} if m.pattern else {})
                for m in self.matches[:10]
            ]
        if self.detail:
            out["detail"] = self.detail
        return out

    def describe(self) -> str:
        """The categories in words: 'violence or threats and self-harm'."""
        labels = [category_label(c) for c in self.categories]
        return " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)


ALLOWED = ModerationResult(False)


class Moderator(Protocol):
    """Anything that moderates text. ``kind`` says whether it is a user's input or a model's output
    (some categories, e.g. prompt injection, only apply to one of them)."""

    name: str

    def moderate(self, text: str, *, kind: Kind = "input") -> ModerationResult: ...


class Combined:
    """Several moderators as one: flagged when any flags; categories and matches are merged."""

    def __init__(self, moderators: Sequence[Moderator]):
        self.moderators = list(moderators)
        self.name = "+".join(m.name for m in self.moderators)

    def moderate(self, text: str, *, kind: Kind = "input") -> ModerationResult:
        results = [m.moderate(text, kind=kind) for m in self.moderators]
        flagged = [r for r in results if r.flagged]
        if not flagged:
            detail = {r.moderator: r.detail for r in results if r.detail}
            return ModerationResult(False, moderator=self.name, detail=detail)
        categories = tuple(dict.fromkeys(c for r in flagged for c in r.categories))
        return ModerationResult(
            True,
            categories,
            block=any(r.block for r in flagged),
            matches=tuple(m for r in flagged for m in r.matches),
            moderator="+".join(r.moderator for r in flagged),
            detail={r.moderator: r.detail for r in results if r.detail},
        )
