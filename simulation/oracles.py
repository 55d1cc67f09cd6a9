"""Gold rewards: the simulated users' true preference, known exactly, so improvement can be measured.

- ``vader``: positive sentiment, the VADER compound score of the reply in [-1, 1] (Hutto & Gilbert
  2014; the lexicon ships with the ``vadersentiment`` package). The DPO paper's controlled sentiment
  generation task used a sentiment classifier as its gold reward in the same way.
- ``concise``: unrelated to sentiment: the reply contains the requested fact (any accepted answer, as a
  whole word, the evaluation gate's checker) and is short:
  ``1[fact] - length_weight * min(words, max_words) / max_words``, in [-length_weight, 1].

Each oracle names the prompt set it is meant for and the gold level above which a simulated user gives
a thumbs up (with Bradley-Terry noise, see ``labelers``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulation.tasks import Task
from trainers.gate import FactCheck

_WORD = re.compile(r"\w+", re.UNICODE)


class Oracle(Protocol):
    name: str
    prompt_set: str
    thumbs_threshold: float

    def score(self, task: Task, reply: str) -> float: ...


@dataclass
class VaderOracle:
    """Positive sentiment of the reply (VADER compound score, -1 .. 1)."""

    name: str = "vader"
    prompt_set: str = "sentiment"
    thumbs_threshold: float = 0.5
    _analyzer: Any = field(default=None, repr=False)

    def score(self, task: Task, reply: str) -> float:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return float(self._analyzer.polarity_scores(reply)["compound"])


@dataclass
class ConciseFactOracle:
    """Contains the requested fact, in as few words as possible."""

    name: str = "concise"
    prompt_set: str = "facts"
    thumbs_threshold: float = 0.6
    length_weight: float = 0.5
    max_words: int = 40

    def score(self, task: Task, reply: str) -> float:
        if not task.answers:
            raise ValueError(f"task {task.id} has no accepted answers; the concise oracle needs them")
        correct = FactCheck(task.prompt, task.answers).correct(reply)
        words = len(_WORD.findall(reply))
        return float(correct) - self.length_weight * min(words, self.max_words) / self.max_words


ORACLES = {"vader": VaderOracle, "concise": ConciseFactOracle}


def make_oracle(name: str) -> Oracle:
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r}; choose one of {sorted(ORACLES)}")
    return ORACLES[name]()
