"""Noisy labelers with a known preference: a gold reward turned into thumbs, A/B votes and rankings.

A/B votes are Bradley-Terry choices on the gold difference, P(A over B) = sigmoid(scale * (g_A - g_B)),
so close calls are coin flips and labels are inconsistent the way people's are (InstructGPT reports
about 73% agreement between labelers). Rankings of K replies are Plackett-Luce draws with the same
scale (sort by scale * g + Gumbel noise), whose pairwise marginals are exactly those Bradley-Terry
choices. A thumbs up is a Bradley-Terry choice against a fixed standard (the oracle's threshold).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulation.oracles import Oracle
from simulation.tasks import Task


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass
class LabelStats:
    """How often the labels agreed with the gold ordering (ties in gold are left out)."""

    votes: int = 0
    votes_agreeing: int = 0
    thumbs: int = 0
    thumbs_up: int = 0
    rankings: int = 0
    ranking_pairs_agreeing: int = 0
    ranking_pairs: int = 0

    @property
    def vote_agreement(self) -> float | None:
        return self.votes_agreeing / self.votes if self.votes else None

    @property
    def pair_agreement(self) -> float | None:
        """Agreement with gold over every pairwise preference given (votes and ranking pairs)."""
        n = self.votes + self.ranking_pairs
        return (self.votes_agreeing + self.ranking_pairs_agreeing) / n if n else None


@dataclass
class BradleyTerryLabeler:
    oracle: Oracle
    scale: float = 4.0
    """Inverse noise: higher = labels follow the gold reward more faithfully."""
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    stats: LabelStats = field(default_factory=LabelStats)

    def gold(self, task: Task, reply: str) -> float:
        return self.oracle.score(task, reply)

    def p_prefer(self, gold_a: float, gold_b: float) -> float:
        return sigmoid(self.scale * (gold_a - gold_b))

    def vote(self, task: Task, reply_a: str, reply_b: str) -> str:
        """ "a" or "b": a Bradley-Terry choice on the gold difference."""
        ga, gb = self.gold(task, reply_a), self.gold(task, reply_b)
        choice = "a" if self.rng.random() < self.p_prefer(ga, gb) else "b"
        if ga != gb:
            self.stats.votes += 1
            self.stats.votes_agreeing += (choice == "a") == (ga > gb)
        return choice

    def thumbs(self, task: Task, reply: str) -> int:
        """1 (up) or -1 (down): a Bradley-Terry choice between the reply and the oracle's standard."""
        g = self.gold(task, reply)
        up = self.rng.random() < sigmoid(self.scale * (g - self.oracle.thumbs_threshold))
        self.stats.thumbs += 1
        self.stats.thumbs_up += up
        return 1 if up else -1

    def rank(self, task: Task, replies: Sequence[str]) -> list[int]:
        """Indices of ``replies``, best first: a Plackett-Luce draw (Gumbel-max with the same scale)."""
        golds = [self.gold(task, r) for r in replies]
        noisy = [self.scale * g - math.log(-math.log(self.rng.random() or 1e-300)) for g in golds]
        order = sorted(range(len(replies)), key=lambda i: -noisy[i])
        self.stats.rankings += 1
        for pos, i in enumerate(order):
            for j in order[pos + 1 :]:
                if golds[i] != golds[j]:
                    self.stats.ranking_pairs += 1
                    self.stats.ranking_pairs_agreeing += golds[i] > golds[j]
        return order
