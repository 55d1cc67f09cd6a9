"""KTO (Ethayarajh et al. 2024) with TRL's KTOTrainer on a LoRA adapter, from thumbs up / down.

Unpaired labels are what most users give; KTO learns from them directly. The desirable/undesirable
weights are balanced from the label counts as the KTO paper recommends (lambda_D * n_D / (lambda_U * n_U)
in [1, 4/3]), so a flood of thumbs-down does not dominate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainers.common import PolicyConfig, TrainResult, fit_policy, last_logged, margin_metrics, require
from trainers.data import UnpairedExample, trl_rows


@dataclass
class KTOTrainConfig(PolicyConfig):
    beta: float = 0.1
    learning_rate: float = 5e-5
    min_examples: int = 16
    min_per_label: int = 2
    """KTO needs both kinds of label; at least this many of each."""


def balanced_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) with lambda_D n_D / (lambda_U n_U) = 1 (the paper's lower bound)."""
    if n_desirable <= 0 or n_undesirable <= 0:
        return 1.0, 1.0
    if n_desirable >= n_undesirable:
        return n_undesirable / n_desirable, 1.0
    return 1.0, n_desirable / n_undesirable


def train_kto(
    config: KTOTrainConfig, examples: Sequence[UnpairedExample], callbacks: list | None = None
) -> TrainResult:
    n_good = sum(1 for e in examples if e.label)
    n_bad = len(examples) - n_good
    require(
        len(examples) >= config.min_examples and min(n_good, n_bad) >= config.min_per_label,
        f"{len(examples)} rated replies ({n_good} thumbs up, {n_bad} thumbs down); KTO needs at least "
        f"{config.min_examples} with at least {config.min_per_label} of each.",
    )
    from trl import KTOConfig, KTOTrainer

    desirable_weight, undesirable_weight = balanced_weights(n_good, n_bad)

    def args(common):
        return KTOConfig(
            **common,
            beta=config.beta,
            max_length=config.max_length,
            desirable_weight=desirable_weight,
            undesirable_weight=undesirable_weight,
        )

    def summarize(history, _trainer):
        return {
            "desirable": n_good,
            "undesirable": n_bad,
            "desirable_weight": desirable_weight,
            "undesirable_weight": undesirable_weight,
            **margin_metrics(history),
            "kl_last": last_logged(history, "kl"),
        }

    return fit_policy(
        "kto", config, KTOTrainer, args, trl_rows(examples), callbacks=callbacks, summarize=summarize
    )
