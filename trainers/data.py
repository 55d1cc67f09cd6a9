"""Training examples and the pure transformations applied to them before any trainer sees them:
deduplication, a held-out split that stays stable across runs, per-user caps, one vote per labelling
act, and conversion to the datasets TRL expects (conversational format, so the tokenizer's own chat
template is applied exactly as the served model applies it).

A ranking of K replies is C(K,2) pairs but one vote (and one prompt's 1-7 scores by one user are one
vote too: ``PreferencePair.group``). The reward model weights each pair 1/P (``PreferencePair.weight``).
Where pairs cannot carry a weight, a group counts once by other means: ``cap_per_user`` counts a group
as one example, ``vote_epochs`` gives DPO (whose TRL trainer has no per-example weight) one pair of
each group per epoch, and ``one_pair_per_vote`` gives the held-out pairs the gate and the reward model
measure one pair per group.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import replace
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


def _vote(item: Any, index: int) -> Hashable:
    """The labelling act an example belongs to: its group (a ranking, one prompt's scores), or itself."""
    group = getattr(item, "group", None)
    return group if group is not None else ("example", index)


def cap_per_user(items: Sequence[Example], max_share: float = 0.25, min_per_user: int = 16) -> list[Example]:
    """Keep at most ``max(min_per_user, max_share * votes)`` votes from any one user (their latest).

    So that one enthusiastic (or abusive) user cannot steer a training cycle alone. A vote is one
    example, or all the pairs of one group (a ranking of K counts once, not C(K,2) times).
    """
    if not items:
        return []
    votes: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        votes[_vote(item, i)].append(i)
    cap = max(min_per_user, int(max_share * len(votes)))
    by_user: dict[str, list[list[int]]] = defaultdict(list)
    for indices in votes.values():
        by_user[items[indices[0]].user_id].append(indices)
    keep: set[int] = set()
    for groups in by_user.values():
        latest = sorted(groups, key=lambda g: max(items[i].created_at or "" for i in g), reverse=True)
        for group in latest[:cap]:
            keep.update(group)
    return [item for i, item in enumerate(items) if i in keep]


def _groups(
    pairs: Sequence[PreferencePair],
) -> tuple[list[PreferencePair], dict[Hashable, list[PreferencePair]]]:
    singles: list[PreferencePair] = []
    groups: dict[Hashable, list[PreferencePair]] = {}
    for p in pairs:
        if p.group is None:
            singles.append(p)
        else:
            groups.setdefault(p.group, []).append(p)
    return singles, groups


def _rng(seed: int, group: Hashable) -> random.Random:
    """A generator per group: its draws do not change when other feedback arrives."""
    digest = hashlib.sha256(f"{seed}:{json.dumps(group, default=str)}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def vote_epochs(pairs: Sequence[PreferencePair], epochs: float = 1.0, seed: int = 0) -> list[PreferencePair]:
    """``epochs`` epochs of DPO data in which every vote counts once per epoch: a pair of its own
    appears once per epoch, a group (a ranking, one prompt's scores) gives one of its pairs per epoch,
    drawn without replacement (a ranking of K shows a new pair each epoch until all its pairs have been
    seen). Sampling a pair uniformly is an unbiased estimate of the group's 1/P-weighted loss, without
    the per-example weights TRL's DPOTrainer lacks. A pair of its own with a weight w below 1 (an
    AI-labelled pair) is in each epoch with probability w, the same estimate. Train the result for ONE
    epoch; a fractional ``epochs`` keeps that share of the last epoch. Kept pairs carry weight 1 (they
    stand for the vote)."""
    if epochs <= 0:
        raise ValueError("epochs must be positive")
    singles, groups = _groups(pairs)
    rounds = math.ceil(epochs)
    draws = {g: _rng(seed, g) for g in groups}
    decks: dict[Hashable, list[PreferencePair]] = {g: [] for g in groups}
    out: list[PreferencePair] = []
    light = {id(p): _rng(seed, ("light", p.comparison_id, p.prompt_message_id, p.chosen)) for p in singles}
    for n in range(rounds):
        epoch = [
            p if p.weight >= 1 else replace(p, weight=1.0)
            for p in singles
            if p.weight >= 1 or light[id(p)].random() < p.weight
        ]
        for g, members in groups.items():
            if not decks[g]:  # a fresh shuffled deck once every pair has been drawn
                decks[g] = list(members)
                draws[g].shuffle(decks[g])
            epoch.append(replace(decks[g].pop(), weight=1.0))
        if n == rounds - 1 and epochs < rounds:
            random.Random(seed + n).shuffle(epoch)
            epoch = epoch[: max(1, round(len(epoch) * (epochs - n)))]
        out.extend(epoch)
    return out


def one_pair_per_vote(pairs: Sequence[PreferencePair], seed: int = 0) -> list[PreferencePair]:
    """Every vote once, in the given order: pairs of their own as they are, one pair per group (the
    same pair for the same group and seed however much other feedback there is) with weight 1. For
    held-out measurements, where a ranking must not count C(K,2) times."""
    _, groups = _groups(pairs)
    picked = {id(_rng(seed, g).choice(members)) for g, members in groups.items()}
    return [
        p if p.group is None else replace(p, weight=1.0) for p in pairs if p.group is None or id(p) in picked
    ]


def vote_count(items: Sequence[Any]) -> int:
    """How many votes the examples are (a group of pairs counts once)."""
    return len({_vote(item, i) for i, item in enumerate(items)})


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
