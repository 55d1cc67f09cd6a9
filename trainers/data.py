"""Training examples and the pure transformations applied to them before any trainer sees them:
deduplication, a held-out split that stays stable across runs, per-user caps, and conversion to the
datasets TRL expects (conversational format, so the tokenizer's own chat template is applied exactly as
the served model applies it).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """``chosen`` was preferred over ``rejected`` as a reply to ``prompt`` (a message list ending with the user)."""

    prompt: Messages
    chosen: str
    rejected: str
    weight: float = 1.0  # rankings: 1 / C(K, 2) per pair, so a ranking weighs like one comparison
    source: str = ""  # "vote" | "ranking" | "better_answer" | "import" | ...
    user_id: str = ""
    created_at: str = ""
    group: str | None = None  # pairs expanded from one ranking share a group


@dataclass(frozen=True)
class UnpairedExample:
    """A reply with a thumbs label (KTO)."""

    prompt: Messages
    completion: str
    label: bool
    user_id: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class Demonstration:
    """A reply a person wrote or chose as good (SFT)."""

    prompt: Messages
    completion: str
    user_id: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class PromptExample:
    """A prompt for online RL and best-of-n sampling."""

    prompt: Messages
    user_id: str = ""
    created_at: str = ""


Example = TypeVar("Example", PreferencePair, UnpairedExample, Demonstration, PromptExample)


def prompt_key(prompt: Sequence[dict[str, str]]) -> str:
    canonical = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_heldout(prompt: Sequence[dict[str, str]], fraction: float, salt: str = "heldout-v1") -> bool:
    """Stable membership of the held-out split: a hash of the prompt, not a random draw.

    The same prompt is held out in every run, so evaluation never leaks into training as data grows.
    """
    digest = hashlib.sha256((salt + prompt_key(prompt)).encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < fraction


def split_heldout(items: Iterable[Example], fraction: float = 0.1) -> tuple[list[Example], list[Example]]:
    train, heldout = [], []
    for item in items:
        (heldout if is_heldout(item.prompt, fraction) else train).append(item)
    return train, heldout


def _identity(item: Any) -> tuple:
    key = prompt_key(item.prompt)
    if isinstance(item, PreferencePair):
        return (key, item.chosen, item.rejected, item.user_id)
    if isinstance(item, UnpairedExample):
        return (key, item.completion, item.label, item.user_id)
    if isinstance(item, Demonstration):
        return (key, item.completion, item.user_id)
    return (key, item.user_id)


def dedupe(items: Iterable[Example]) -> list[Example]:
    """Drop repeats of the same example by the same user (the latest one wins), keep order."""
    items = list(items)
    latest: dict[tuple, int] = {}
    for i, item in enumerate(items):
        k = _identity(item)
        if k not in latest or (item.created_at or "") >= (items[latest[k]].created_at or ""):
            latest[k] = i
    kept = set(latest.values())
    return [item for i, item in enumerate(items) if i in kept]


def cap_per_user(items: Sequence[Example], max_share: float = 0.25, min_per_user: int = 16) -> list[Example]:
    """Keep at most ``max(min_per_user, max_share * len(items))`` examples from any one user (their latest).

    So that one enthusiastic (or abusive) user cannot steer a training cycle alone.
    """
    if not items:
        return []
    cap = max(min_per_user, int(max_share * len(items)))
    by_user: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_user[item.user_id].append(i)
    keep: set[int] = set()
    for indices in by_user.values():
        ordered = sorted(indices, key=lambda i: items[i].created_at or "", reverse=True)
        keep.update(ordered[:cap])
    return [item for i, item in enumerate(items) if i in keep]


def filter_items(
    items: Iterable[Example],
    *,
    since: str | None = None,
    user_ids: set[str] | None = None,
    predicate: Callable[[Example], bool] | None = None,
) -> list[Example]:
    out = []
    for item in items:
        if since and (item.created_at or "") < since:
            continue
        if user_ids is not None and item.user_id not in user_ids:
            continue
        if predicate is not None and not predicate(item):
            continue
        out.append(item)
    return out


# -- TRL dataset formats (conversational) --------------------------------------------------------------
def _assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def preference_rows(pairs: Sequence[PreferencePair], with_weight: bool = False) -> list[dict[str, Any]]:
    rows = []
    for p in pairs:
        row: dict[str, Any] = {
            "prompt": list(p.prompt),
            "chosen": _assistant(p.chosen),
            "rejected": _assistant(p.rejected),
        }
        if with_weight:
            row["weight"] = float(p.weight)
        rows.append(row)
    return rows


def unpaired_rows(items: Sequence[UnpairedExample]) -> list[dict[str, Any]]:
    return [
        {"prompt": list(x.prompt), "completion": _assistant(x.completion), "label": bool(x.label)}
        for x in items
    ]


def sft_rows(items: Sequence[Demonstration]) -> list[dict[str, Any]]:
    # prompt/completion form: TRL computes the loss on the completion only.
    return [{"prompt": list(x.prompt), "completion": _assistant(x.completion)} for x in items]


def prompt_rows(items: Sequence[PromptExample]) -> list[dict[str, Any]]:
    return [{"prompt": list(x.prompt)} for x in items]


def to_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(rows)
