"""DPO (Rafailov et al. 2023) with TRL's DPOTrainer on a LoRA adapter.

The reference is the base with the adapter disabled (no second copy of the model), or — when continuing
from ``init_adapter`` — a frozen copy of that adapter (the previous policy). ``beta`` sets how far the
policy may move from the reference: the KL penalty of RLHF in closed form.

TRL's DPOTrainer has no per-example weight, so a vote's weight is honoured by sampling: each epoch
holds one pair per vote (a ranking of K gives one of its C(K,2) pairs, not all of them), from
``trainers.data.vote_epochs``; the trainer then runs one pass over those epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trainers.common import (
    PolicyConfig,
    TrainResult,
    fit_policy,
    last_logged,
    margin_metrics,
    require,
    same_named,
)
from trainers.data import PreferencePair, preference_rows, vote_count, vote_epochs


@dataclass
class DPOTrainConfig(PolicyConfig):
    beta: float = 0.1
    """Strength of the implicit KL penalty; smaller lets the policy move further from the reference."""
    learning_rate: float = 5e-5
    """LoRA needs a larger rate than full fine-tuning (TRL's default 1e-6 barely moves an adapter)."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO), "ipo", "hinge", "robust", ... any loss TRL's DPOTrainer accepts (``--dpo-loss``)."""
    label_smoothing: float = 0.0
    """The probability that a vote is flipped: robust DPO with "robust", conservative DPO with "sigmoid"."""
    min_examples: int = 16


def vote_examples(config: PolicyConfig, pairs: Sequence[PreferencePair], method: str) -> list[PreferencePair]:
    """What a pairwise method trains on: one pair per vote per epoch (``vote_epochs``), refused below the
    method's minimum of votes. DPO's, and the reference-free methods' (``trainers.reference_free``)."""
    votes = vote_count(pairs)
    require(
        votes >= config.min_examples,
        f"{votes} preference votes; {method} needs at least {config.min_examples}. "
        "Collect more A/B votes, rankings or better answers.",
    )
    return vote_epochs(pairs, config.num_epochs, config.seed)


def fit_votes(
    method: str,
    config: PolicyConfig,
    trainer_class: type,
    make_args: Callable[[dict[str, Any]], Any],
    examples: Sequence[PreferencePair],
    callbacks: list | None,
    summarize: Callable[[list[dict[str, Any]], Any], dict[str, Any]],
) -> TrainResult:
    """``fit_policy`` on the pairs from ``vote_examples``: the epochs are in the data, so the trainer
    makes one pass over them. DPO's, and the reference-free methods'."""
    return fit_policy(
        method,
        config,
        trainer_class,
        lambda common: make_args({**common, "num_train_epochs": 1.0}),
        preference_rows(examples),
        callbacks=callbacks,
        summarize=summarize,
    )


def train_dpo(
    config: DPOTrainConfig, pairs: Sequence[PreferencePair], callbacks: list | None = None
) -> TrainResult:
    examples = vote_examples(config, pairs, "DPO")
    from trl import DPOConfig, DPOTrainer

    def args(common):
        return DPOConfig(**common, **same_named(config, "beta", "max_length", "loss_type", "label_smoothing"))

    def summarize(history, _trainer):
        return {
            **margin_metrics(history),
            "reward_accuracy_last": last_logged(history, "rewards/accuracies"),
            "loss_type": config.loss_type,
            "label_smoothing": config.label_smoothing,
        }

    return fit_votes("dpo", config, DPOTrainer, args, examples, callbacks, summarize)
