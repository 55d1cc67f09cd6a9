"""DPO (Rafailov et al. 2023) with TRL's DPOTrainer on a LoRA adapter.

The reference is the base with the adapter disabled (no second copy of the model), or — when continuing
from ``init_adapter`` — a frozen copy of that adapter (the previous policy). ``beta`` sets how far the
policy may move from the reference: the KL penalty of RLHF in closed form.

TRL's DPOTrainer has no per-example weight, so a vote's weight is honoured by sampling: each epoch
holds one pair per vote (a ranking of K gives one of its C(K,2) pairs, not all of them), from
``trainers.data.vote_epochs``; the trainer then runs one pass over those epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainers.common import (
    CommonConfig,
    TrainingDataError,
    TrainResult,
    fit_adapter,
    last_logged,
    load_policy,
    mean_logged,
)
from trainers.data import PreferencePair, preference_rows, to_dataset, vote_count, vote_epochs


@dataclass
class DPOTrainConfig(CommonConfig):
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
    votes = vote_count(pairs)
    if votes < config.min_examples:
        raise TrainingDataError(
            f"{votes} preference votes; DPO needs at least {config.min_examples}. "
            "Collect more A/B votes, rankings or better answers."
        )
    from trl import DPOConfig, DPOTrainer

    model, tokenizer, peft_config = load_policy(config)
    examples = vote_epochs(pairs, config.num_epochs, config.seed)

    def make_trainer(work_dir):
        args = DPOConfig(
            **{**config.trainer_kwargs(work_dir), "num_train_epochs": 1.0},  # the epochs are in the data
            beta=config.beta,
            max_length=config.max_length,
            loss_type=config.loss_type,
        )
        return DPOTrainer(
            model=model,
            args=args,
            train_dataset=to_dataset(preference_rows(examples)),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    def summarize(history, _trainer):
        return {
            "reward_margin_last": last_logged(history, "rewards/margins"),
            "reward_margin_mean": mean_logged(history, "rewards/margins"),
            "reward_accuracy_last": last_logged(history, "rewards/accuracies"),
        }

    return fit_adapter("dpo", config, make_trainer, tokenizer, examples=len(examples), summarize=summarize)
