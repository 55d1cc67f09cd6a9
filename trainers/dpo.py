"""DPO (Rafailov et al. 2023) with TRL's DPOTrainer on a LoRA adapter.

The reference is the base with the adapter disabled (no second copy of the model), or — when continuing
from ``init_adapter`` — a frozen copy of that adapter (the previous policy). ``beta`` sets how far the
policy may move from the reference: the KL penalty of RLHF in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainers.common import PolicyConfig, TrainResult, fit_policy, last_logged, margin_metrics, require
from trainers.data import PreferencePair, preference_rows, to_dataset


@dataclass
class DPOTrainConfig(PolicyConfig):
    beta: float = 0.1
    """Strength of the implicit KL penalty; smaller lets the policy move further from the reference."""
    learning_rate: float = 5e-5
    """LoRA needs a larger rate than full fine-tuning (TRL's default 1e-6 barely moves an adapter)."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO), "ipo", "hinge", ... any loss TRL's DPOTrainer accepts."""
    min_examples: int = 16


def train_dpo(
    config: DPOTrainConfig, pairs: Sequence[PreferencePair], callbacks: list | None = None
) -> TrainResult:
    require(
        len(pairs) >= config.min_examples,
        f"{len(pairs)} preference pairs; DPO needs at least {config.min_examples}. "
        "Collect more A/B votes, rankings or better answers.",
    )
    from trl import DPOConfig, DPOTrainer

    def args(common):
        return DPOConfig(**common, beta=config.beta, max_length=config.max_length, loss_type=config.loss_type)

    def summarize(history, _trainer):
        return {**margin_metrics(history), "reward_accuracy_last": last_logged(history, "rewards/accuracies")}

    return fit_policy(
        "dpo",
        config,
        DPOTrainer,
        args,
        to_dataset(preference_rows(pairs)),
        examples=len(pairs),
        callbacks=callbacks,
        summarize=summarize,
    )
