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
from typing import Any, TypeVar

# The records come from the store's read API; trainers add no record types of their own.
from feedback_store.datasets import Demonstration, PreferencePair, PromptRecord, UnpairedExample

Messages = list[dict[str, str]]


Example = TypeVar("Example", PreferencePair, UnpairedExample, Demonstration, PromptRecord)


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
def preference_rows(pairs: Sequence[PreferencePair], with_weight: bool = False) -> list[dict[str, Any]]:
    rows = []
    for p in pairs:
        row = p.to_trl()
        if with_weight:
            row["weight"] = float(p.weight)
        rows.append(row)
    return rows


def trl_rows(items: Sequence[UnpairedExample | Demonstration | PromptRecord]) -> list[dict[str, Any]]:
    return [item.to_trl() for item in items]


def to_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(rows)
