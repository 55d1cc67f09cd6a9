"""Statistics over feedback, as pure functions of plain values (no database, no clock, no global RNG):
Wilson intervals for thumbs-up rates, win rates, Bradley-Terry ratings fitted by maximum likelihood
with ties as half wins and bootstrap confidence intervals (the method of FastChat's Chatbot Arena
``rating_systems``), counts over time, and the expansion of a ranking (ties allowed) into ordered pairs.

``feedback_store.summary`` reads the database and feeds these; the Dashboard tab plots the results.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from typing import NamedTuple, TypeVar

import numpy as np

T = TypeVar("T")
Z95 = 1.959963984540054
OUTCOMES = ("a", "b", "tie")


def ranking_pairs(best_first: Sequence[T]) -> list[tuple[T, T]]:
    """The K*(K-1)/2 ordered pairs (better, worse) implied by a ranking, as the InstructGPT reward
    model loss uses them: every item beats every item ranked below it."""
    if len(set(best_first)) != len(best_first):
        raise ValueError("a ranking lists each item once")
    return list(combinations(best_first, 2))


def tied_ranking_pairs(best_first: Sequence[T], ranks: Sequence[int]) -> list[tuple[T, T, bool]]:
    """Every pair (i listed before j) of a ranking that may have ties, as (i, j, tied): ``ranks`` are
    the ranks of ``best_first`` (1 = best, equal for tied items, not decreasing). Training takes the
    pairs that are not tied (InstructGPT's y_D > y_C > y_A = y_B gives 5 preferences); statistics
    count tied pairs as ties."""
    if len(ranks) != len(best_first):
        raise ValueError("one rank per item")
    if any(b < a for a, b in zip(ranks, ranks[1:], strict=False)):
        raise ValueError("ranks must not decrease down a best-first ranking")
    if len(set(best_first)) != len(best_first):
        raise ValueError("a ranking lists each item once")
    items = list(zip(best_first, ranks, strict=True))
    return [(a, b, ra == rb) for (a, ra), (b, rb) in combinations(items, 2)]


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (good at small n and near 0 or 1, unlike the normal
    approximation). With n = 0 the interval is the whole (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n, got {successes} of {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Rate:
    key: Hashable
    successes: float
    n: float
    rate: float
    low: float
    high: float


def rates(observations: Iterable[tuple[Hashable, bool]]) -> list[Rate]:
    """Per key: the share of True observations with its Wilson interval (e.g. thumbs up per version)."""
    up: Counter = Counter()
    total: Counter = Counter()
    for key, ok in observations:
        total[key] += 1
        up[key] += bool(ok)
    out = []
    for key in sorted(total, key=str):
        low, high = wilson_interval(up[key], total[key])
        out.append(Rate(key, up[key], total[key], up[key] / total[key], low, high))
    return out


class Battle(NamedTuple):
    """One pairwise outcome between players ``a`` and ``b``: "a" or "b" won, or "tie"."""

    a: str
    b: str
    outcome: str
    weight: float = 1.0


def _check(battles: Sequence[Battle]) -> None:
    for battle in battles:
        if battle.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {battle.outcome!r}")
        if battle.a == battle.b:
            raise ValueError(f"a battle needs two different players, got {battle.a!r} twice")
        if not battle.weight > 0:
            raise ValueError(f"battle weights must be positive, got {battle.weight}")


@dataclass(frozen=True)
class WinRate:
    player: str
    wins: float
    ties: float
    losses: float
    battles: float
    rate: float  # (wins + ties / 2) / battles
    low: float
    high: float


def win_rates(battles: Sequence[Battle]) -> list[WinRate]:
    """Each player's weighted wins, ties and losses, and its win rate (ties count half) with a Wilson
    interval; best first."""
    _check(battles)
    w: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for a, b, outcome, weight in battles:
        if outcome == "tie":
            w[a][1] += weight
            w[b][1] += weight
        else:
            winner, loser = (a, b) if outcome == "a" else (b, a)
            w[winner][0] += weight
            w[loser][2] += weight
    out = []
    for player, (wins, ties, losses) in w.items():
        n = wins + ties + losses
        score = wins + ties / 2
        low, high = wilson_interval(score, n)
        out.append(WinRate(player, wins, ties, losses, n, score / n, low, high))
    return sorted(out, key=lambda r: (-r.rate, r.player))


def pairwise_win_matrix(battles: Sequence[Battle]) -> tuple[list[str], np.ndarray]:
    """Players (sorted) and M[i, j] = share of i's battles against j that i won, ties half (NaN where
    they never met)."""
    _check(battles)
    players = sorted({p for b in battles for p in (b.a, b.b)})
    index = {p: i for i, p in enumerate(players)}
    score = np.zeros((len(players), len(players)))
    count = np.zeros_like(score)
    for a, b, outcome, weight in battles:
        i, j = index[a], index[b]
        s = {"a": 1.0, "b": 0.0, "tie": 0.5}[outcome]
        score[i, j] += weight * s
        score[j, i] += weight * (1 - s)
        count[i, j] += weight
        count[j, i] += weight
    with np.errstate(invalid="ignore", divide="ignore"):
        return players, np.where(count > 0, score / np.where(count > 0, count, 1), np.nan)


def _encode(battles: Sequence[Battle]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Players, and the distinct (a, b, outcome) rows with their summed weights: the likelihood only
    depends on those, so fits run on a few rows however many battles there are (FastChat's trick).
    ``inverse`` maps each battle to its row, for re-weighting in the bootstrap."""
    players = sorted({p for b in battles for p in (b.a, b.b)})
    index = {p: i for i, p in enumerate(players)}
    code = {"a": 2, "tie": 1, "b": 0}
    rows = np.array([(index[b.a], index[b.b], code[b.outcome]) for b in battles], dtype=np.int64).reshape(
        -1, 3
    )
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    battle_weights = np.array([b.weight for b in battles], dtype=float)
    return players, unique, inverse, battle_weights, unique[:, 2] / 2.0


def _fit(
    n_players: int, pairs: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, l2: float
) -> np.ndarray:
    """Strengths (natural-log odds scale, mean 0) maximising the weighted BT likelihood."""
    from scipy.optimize import minimize  # here, not at the top: opening the store imports this module
    from scipy.special import log_expit

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[pairs[:, 0]] - theta[pairs[:, 1]]
        # outcome o in {1, 0.5, 0}: a tie is half a win for each side (FastChat's convention)
        loss = -np.sum(weights * (outcomes * log_expit(d) + (1 - outcomes) * log_expit(-d)))
        g_d = -weights * (outcomes - 1 / (1 + np.exp(-d)))
        grad = np.bincount(pairs[:, 0], g_d, n_players) - np.bincount(pairs[:, 1], g_d, n_players)
        return loss + 0.5 * l2 * theta @ theta, grad + l2 * theta

    result = minimize(
        loss_and_grad, np.zeros(n_players), jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "ftol": 1e-12}
    )
    theta = result.x
    return theta - theta.mean()


def _to_elo(theta: np.ndarray, scale: float, base: float, offset: float) -> np.ndarray:
    return offset + scale * theta / math.log(base)


def bradley_terry(
    battles: Sequence[Battle],
    *,
    scale: float = 400.0,
    base: float = 10.0,
    offset: float = 1000.0,
    l2: float = 1e-3,
) -> dict[str, float]:
    """Bradley-Terry ratings by maximum likelihood, on the Elo scale Chatbot Arena uses: a player
    ``scale`` points above another is expected to win ``base``:1; the mean rating is ``offset``.

    Ties count as half a win for each side; ``weight`` scales a battle (a ranking's pairs carry
    1/C(K,2)). ``l2`` is a weak Gaussian prior on the strengths that keeps them finite when a player
    never lost (pure MLE diverges there); it is negligible once both sides have a few results.
    """
    _check(battles)
    if not battles:
        return {}
    players, rows, inverse, battle_weights, outcomes = _encode(battles)
    weights = np.bincount(inverse, battle_weights, len(rows))
    theta = _fit(len(players), rows[:, :2], outcomes, weights, l2)
    return dict(zip(players, _to_elo(theta, scale, base, offset).tolist(), strict=True))


@dataclass(frozen=True)
class LeaderboardRow:
    player: str
    rating: float  # the maximum-likelihood fit on all battles
    low: float  # bootstrap percentile interval
    high: float
    battles: float
    rank: int  # 1 + number of players whose interval lies entirely above this one's (Arena's rule)


def bootstrap_bradley_terry(
    battles: Sequence[Battle],
    *,
    rounds: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    scale: float = 400.0,
    base: float = 10.0,
    offset: float = 1000.0,
    l2: float = 1e-3,
) -> list[LeaderboardRow]:
    """A leaderboard: BT ratings with bootstrap confidence intervals (battles resampled with
    replacement ``rounds`` times, as multinomial counts), best first. Deterministic for a seed."""
    _check(battles)
    if not battles:
        return []
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    players, rows, inverse, battle_weights, outcomes = _encode(battles)
    pairs = rows[:, :2]

    def fit(per_battle: np.ndarray) -> np.ndarray:
        weights = np.bincount(inverse, per_battle, len(rows))
        keep = weights > 0
        return _to_elo(
            _fit(len(players), pairs[keep], outcomes[keep], weights[keep], l2), scale, base, offset
        )

    point = fit(battle_weights)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(battles), np.full(len(battles), 1 / len(battles)), size=rounds)
    samples = np.array([fit(battle_weights * c) for c in counts])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    totals = np.bincount(inverse, battle_weights, len(rows))
    played = np.bincount(pairs.ravel(), np.repeat(totals, 2), len(players))
    rows = [
        (players[i], float(point[i]), float(low[i]), float(high[i]), float(played[i]))
        for i in range(len(players))
    ]
    board = []
    for name, rating, lo, hi, n in rows:
        rank = 1 + sum(1 for other in rows if other[2] > hi)
        board.append(LeaderboardRow(name, rating, lo, hi, n, rank))
    return sorted(board, key=lambda r: (-r.rating, r.player))


def counts_over_time(
    events: Iterable[tuple[str, str]], *, bucket: str = "day"
) -> dict[str, list[tuple[str, int]]]:
    """Per kind, the number of events per day (or hour, or month) from ISO-8601 timestamps, with
    empty buckets between the first and last filled in with 0 so that lines do not skip gaps."""
    width = {"hour": 13, "day": 10, "month": 7}.get(bucket)
    if width is None:
        raise ValueError("bucket must be hour, day or month")
    per_kind: defaultdict[str, Counter] = defaultdict(Counter)
    for kind, timestamp in events:
        per_kind[kind][timestamp[:width]] += 1
    if not per_kind:
        return {}
    keys = sorted({k for c in per_kind.values() for k in c})
    keys = _fill(keys, bucket)
    return {kind: [(k, c.get(k, 0)) for k in keys] for kind, c in sorted(per_kind.items())}


def _fill(keys: list[str], bucket: str) -> list[str]:
    fmt = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "month": "%Y-%m"}[bucket]
    try:
        first, last = datetime.strptime(keys[0], fmt), datetime.strptime(keys[-1], fmt)
    except ValueError:
        return keys
    out, t = [], first
    while t <= last and len(out) < 10_000:
        out.append(t.strftime(fmt))
        if bucket == "hour":
            t += timedelta(hours=1)
        elif bucket == "day":
            t += timedelta(days=1)
        else:
            t = t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)
    return out
