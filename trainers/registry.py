"""The training methods, one entry each: everything that lists, configures, picks or runs a method reads
this registry (the runner, the ``train`` command's choices, the cycle's automatic choice, the loop,
the settings check). Adding a method is one ``Method`` entry plus its module.

Importing this module is cheap: each method's module (and TRL, torch) is imported only when the method's
config class or train function is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

DataKind = Literal["pairs", "unpaired", "demonstrations", "prompts"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    module: str
    """The module holding the config class and the train function."""
    config: str
    train: str
    data: DataKind
    """What it learns from: preference pairs, thumbs (unpaired), demonstrations, or prompts (online)."""
    needs_reward_model: bool = False
    policy: bool = True
    """False for the reward model: it scores replies, it is not served."""
    takes_heldout: bool = False
    """Its train function also gets the held-out split (the reward model reports held-out accuracy)."""

    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config)

    def train_function(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.train)

    @property
    def min_examples(self) -> int:
        """The fewest examples it trains on (its config's default): below that, a clear refusal."""
        return _min_examples(self.name)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "reward",
            "reward model (pairwise loss) on preference pairs",
            "trainers.reward",
            "RewardTrainConfig",
            "train_reward_model",
            "pairs",
            policy=False,
            takes_heldout=True,
        ),
        Method("dpo", "DPO on preference pairs", "trainers.dpo", "DPOTrainConfig", "train_dpo", "pairs"),
        Method("kto", "KTO on thumbs up / down", "trainers.kto", "KTOTrainConfig", "train_kto", "unpaired"),
        Method(
            "orpo",
            "ORPO on preference pairs (reference-free: NLL plus an odds-ratio term)",
            "trainers.reference_free",
            "ORPOTrainConfig",
            "train_orpo",
            "pairs",
        ),
        Method(
            "simpo",
            "SimPO on preference pairs (reference-free, length-normalised reward with a margin)",
            "trainers.reference_free",
            "SimPOTrainConfig",
            "train_simpo",
            "pairs",
        ),
        Method(
            "sft",
            "SFT on better answers (demonstrations)",
            "trainers.sft",
            "SFTTrainConfig",
            "train_sft",
            "demonstrations",
        ),
        Method(
            "rl",
            "RLOO with the reward model and a KL penalty (PPO family)",
            "trainers.rl",
            "RLTrainConfig",
            "train_rl",
            "prompts",
            needs_reward_model=True,
        ),
        Method(
            "best_of_n",
            "best-of-n rejection sampling with the reward model, then SFT",
            "trainers.best_of_n",
            "BestOfNConfig",
            "train_best_of_n",
            "prompts",
            needs_reward_model=True,
        ),
    )
}
AUTO = "auto"


def names(policy_only: bool = False) -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.policy or not policy_only)


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; choose one of {', '.join(METHODS)}") from None


def check_policy_method(name: str) -> str:
    """``name`` if it is "auto" or a policy method, else ValueError naming the choices."""
    if name != AUTO and (name not in METHODS or not METHODS[name].policy):
        raise ValueError(
            f"--train-method {name!r} is not a policy method; choose {AUTO} or one of "
            f"{', '.join(names(policy_only=True))}"
        )
    return name


@cache
def _min_examples(name: str) -> int:
    return int(METHODS[name].config_class().min_examples)


def choose_method(
    n_pairs: int,
    n_good: int,
    n_bad: int,
    n_demos: int,
    min_pairs: int | None = None,
    min_unpaired: int | None = None,
) -> str | None:
    """The policy method for the data at hand when the setting is "auto": DPO on pairs; KTO when thumbs
    dominate or there are no pairs; SFT when there are only demonstrations; None when nothing is enough.
    The thresholds are the methods' own minimums unless given."""
    min_pairs = _min_examples("dpo") if min_pairs is None else min_pairs
    min_unpaired = _min_examples("kto") if min_unpaired is None else min_unpaired
    min_demos = _min_examples("sft")
    unpaired_ok = n_good + n_bad >= min_unpaired and min(n_good, n_bad) >= 2
    if unpaired_ok and n_good + n_bad >= 2 * max(n_pairs, 1) and n_pairs < 4 * min_pairs:
        return "kto"  # thumbs dominate: learn from them directly
    if n_pairs >= min_pairs:
        return "dpo"
    if unpaired_ok:
        return "kto"
    if n_demos >= min_demos:
        return "sft"
    return None
