"""How every kind of label becomes training signal, as pure functions of plain values (the readers in
``feedback_store.datasets`` apply them to stored rows):

- **KTO's desirable / undesirable** (``kto_label``): an InstructGPT flag makes a reply undesirable,
  whatever else was said; otherwise the thumbs, and the 1-7 score where there are no thumbs: a score of
  ``desirable_score`` (5) or more is desirable, ``undesirable_score`` (3) or less undesirable, 4 is
  neutral and gives no label. A thumbs and a score that disagree (thumbs up with a score of 3 or less,
  thumbs down with 5 or more) give no label: the example is dropped as contradictory, because a
  label the rater contradicted is noise that KTO would learn as signal. A neutral 4 beside a thumbs
  does not contradict it.
- **Score pairs** (``score_pairs``): one user's scores on several replies to the same prompt give a
  preference pair for every two replies with different scores (the higher chosen); the pairs of one
  such group are weighted 1/P (P = its pairs), so one prompt's scores count like one vote.
- **Rankings with ties** (``feedback_store.stats.tied_ranking_pairs``): every reply beats every reply
  ranked below it; tied replies give no pair (InstructGPT's y_D > y_C > y_A = y_B has 5 pairs, not
  6); the pairs of one ranking are weighted 1/P so that a ranking counts like one vote. (Without ties
  P = C(K,2), InstructGPT's weight.)
- **Harmful flags** (``HARMFUL_FLAGS``): a reply a user flagged as sexual, violent, encouraging harm,
  denigrating a protected class or giving harmful advice is never SFT text: no SFT example contains it.
  Any flag keeps a reply from being a target (SFT targets are people's better answers, never replies).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TypeVar

T = TypeVar("T", bound=Hashable)

# The InstructGPT flags (feedback_store.feedback.INSTRUCTGPT_FLAGS) that say a reply is harmful, not
# only poor: such a reply stays out of SFT altogether.
HARMFUL_FLAGS = frozenset(
    {
        "sexual_content",
        "violent_content",
        "encourages_harm",
        "denigrates_protected_class",
        "harmful_advice",
    }
)


@dataclass(frozen=True)
class LabelPolicy:
    """The score thresholds of KTO's labels (the 1-7 scale of the feedback panel)."""

    desirable_score: int = 5
    """A score of this or more is a desirable reply (5, 6, 7: better than acceptable)."""
    undesirable_score: int = 3
    """A score of this or less is an undesirable one (1, 2, 3: worse than acceptable); 4 is neutral."""

    def __post_init__(self) -> None:
        if not 1 <= self.undesirable_score < self.desirable_score <= 7:
            raise ValueError("the thresholds need 1 <= undesirable_score < desirable_score <= 7")

    def score_label(self, score: int | None) -> bool | None:
        """True (desirable), False (undesirable) or None (no score, or a neutral one)."""
        if score is None:
            return None
        if score >= self.desirable_score:
            return True
        if score <= self.undesirable_score:
            return False
        return None


LABEL_POLICY = LabelPolicy()
"""The thresholds the training readers use unless told otherwise."""

LABEL_SOURCES = ("flags", "thumbs", "score")


def kto_label(
    thumbs: int | None,
    score: int | None,
    flags: Sequence[str] = (),
    policy: LabelPolicy = LABEL_POLICY,
) -> tuple[bool | None, str]:
    """(label, why) for one user's feedback on one reply: label True (desirable), False (undesirable)
    or None (no label), and which field decided it ("flags", "thumbs", "score") or why there is no
    label ("contradictory", "neutral")."""
    if flags:
        return False, "flags"
    from_score = policy.score_label(score)
    if thumbs is not None:
        up = thumbs == 1
        if from_score is not None and from_score != up:
            return None, "contradictory"
        return up, "thumbs"
    if from_score is not None:
        return from_score, "score"
    return None, "neutral"


def score_pairs(scored: Sequence[tuple[T, int]]) -> list[tuple[T, T]]:
    """(better, worse) for every two items with different scores; items with equal scores give no
    pair (as a tie in a ranking). Higher scores first, then in the given order."""
    ordered = sorted(scored, key=lambda item: -item[1])  # stable: equal scores keep their order
    return [(a, b) for (a, sa), (b, sb) in combinations(ordered, 2) if sa > sb]


def group_weight(n_pairs: int) -> float:
    """The weight of each pair of one labelling act (a ranking, one user's scores on one prompt) so
    that the act counts as one vote in total."""
    if n_pairs < 1:
        raise ValueError("a group has at least one pair")
    return 1.0 / n_pairs
