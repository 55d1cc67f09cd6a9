"""Reference-free preference optimisation on preference pairs, through TRL's experimental trainers:

- **ORPO** (Hong et al. 2024): the NLL of the chosen reply plus ``beta`` (the paper's lambda) times an
  odds-ratio term that lowers the rejected reply's odds against the chosen one's;
- **SimPO** (Meng et al. 2024), TRL's CPOTrainer with ``loss_type="simpo"``: the length-normalised
  log-likelihood as the implicit reward, with a target margin ``simpo_gamma``.

Neither needs a reference model (no second forward pass through the frozen policy), so a step costs
about what an SFT step costs. Like DPO they see one pair per vote per epoch (``trainers.data.vote_epochs``),
and they get the replay term against the alignment tax like every policy method.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from trainers.common import PolicyConfig, TrainResult, last_logged, same_named
from trainers.data import PreferencePair
from trainers.dpo import fit_votes, vote_examples


@dataclass
class ORPOTrainConfig(PolicyConfig):
    beta: float = 0.1
    """The odds-ratio term's weight next to the chosen reply's NLL (lambda in the ORPO paper)."""
    learning_rate: float = 5e-5
    min_examples: int = 16


@dataclass
class SimPOTrainConfig(PolicyConfig):
    beta: float = 2.0
    """Scale of the length-normalised reward (SimPO's paper uses 2.0-2.5)."""
    simpo_gamma: float = 0.5
    """Target reward margin between the chosen and the rejected reply."""
    learning_rate: float = 5e-5
    min_examples: int = 16


def _experimental() -> None:
    """TRL warns on every import from trl.experimental; these two are chosen knowingly (see above)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _summarize(history, _trainer):
    return {
        "reward_margin_last": last_logged(history, "rewards/margins"),
        "reward_accuracy_last": last_logged(history, "rewards/accuracies"),
    }


def train_orpo(
    config: ORPOTrainConfig, pairs: Sequence[PreferencePair], callbacks: list | None = None
) -> TrainResult:
    examples = vote_examples(config, pairs, "ORPO")
    _experimental()
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    def args(common):
        return ORPOConfig(**common, beta=config.beta, max_length=config.max_length)

    return fit_votes("orpo", config, ORPOTrainer, args, examples, callbacks, _summarize)


def train_simpo(
    config: SimPOTrainConfig, pairs: Sequence[PreferencePair], callbacks: list | None = None
) -> TrainResult:
    examples = vote_examples(config, pairs, "SimPO")
    _experimental()
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    def args(common):
        return CPOConfig(
            **common,
            loss_type="simpo",
            cpo_alpha=0.0,  # pure SimPO: no behaviour-cloning term
            **same_named(config, "beta", "simpo_gamma", "max_length"),
        )

    return fit_votes("simpo", config, CPOTrainer, args, examples, callbacks, _summarize)
