"""Reading answers out of model text, and counting votes. Pure functions, no model.

- ``extract_answer``: the answer part of a reply ("... The answer is 42." -> "42"), falling back to
  the last line when the model used no answer marker.
- ``answer_key``: what self-consistency votes on: the answer's number in canonical form when it has
  one (``1,250.0`` -> ``1250``), otherwise its normalised words.
- ``majority_vote``: the most common key (ties go to the answer that appeared first) and the counts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_MARKER = re.compile(
    r"(?:final\s+answer|the\s+answer\s+is|answer\s+is|answer\s*:|####)\s*(?:is\s*)?[:=]?\s*",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"(?<![\w.])-?\d(?:[\d,]*\d)?(?:\.\d+)?")
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|\n")
_ARTICLES = re.compile(r"^(?:the|a|an)\s+")
MAX_ANSWER_CHARS = 200


def has_answer_marker(text: str) -> bool:
    return bool(_MARKER.search(text) or _BOXED.search(text))


def extract_answer(text: str) -> str:
    """The answer part of ``text``: after the last answer marker (to the end of that sentence), the
    last ``\\boxed{}``, or else the last non-empty line."""
    text = (text or "").strip()
    if not text:
        return ""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    for match in reversed(list(_MARKER.finditer(text))):
        tail = text[match.end() :].lstrip(" \t*_:\"'")
        end = _SENTENCE_END.search(tail)
        answer = (tail[: end.start()] if end else tail).strip(" \t*_\"'`")
        if answer:
            return answer[:MAX_ANSWER_CHARS]
    lines = [line.strip(" \t*_") for line in text.splitlines() if line.strip(" \t*_")]
    return lines[-1][:MAX_ANSWER_CHARS] if lines else ""


def canonical_number(token: str) -> str | None:
    """'1,250.50' -> '1250.5'; '-0' -> '0'; None when ``token`` is not a number."""
    try:
        value = Decimal(token.replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    normal = value.normalize()
    text = format(normal, "f")
    return text


def numbers_in(text: str) -> list[str]:
    out = []
    for token in _NUMBER.findall(text or ""):
        canonical = canonical_number(token)
        if canonical is not None:
            out.append(canonical)
    return out


def normalise_text(text: str) -> str:
    text = re.sub(r"[^\w\s.-]", " ", (text or "").lower())
    text = " ".join(text.replace(".", " ").split())
    return _ARTICLES.sub("", text)


def answer_key(reply: str) -> str:
    """What a reply votes for: the number its answer states (the first after an answer marker, the last
    otherwise), or the answer's normalised words when it states no number; '' when it says nothing."""
    answer = extract_answer(reply)
    numbers = numbers_in(answer)
    if numbers:
        return numbers[0] if has_answer_marker(reply) else numbers[-1]
    return normalise_text(answer)


@dataclass(frozen=True)
class Vote:
    winner: str | None
    counts: dict[str, int]  # most votes first; ties in order of first appearance
    total: int  # samples
    valid: int  # samples with an answer

    @property
    def agreement(self) -> float:
        return 0.0 if not self.valid or self.winner is None else self.counts[self.winner] / self.valid


def majority_vote(keys: list[str]) -> Vote:
    valid = [k for k in keys if k]
    counter = Counter(valid)
    first_seen = {k: i for i, k in reversed(list(enumerate(valid)))}
    ordered = sorted(counter, key=lambda k: (-counter[k], first_seen[k]))
    return Vote(
        winner=ordered[0] if ordered else None,
        counts={k: counter[k] for k in ordered},
        total=len(keys),
        valid=len(valid),
    )
