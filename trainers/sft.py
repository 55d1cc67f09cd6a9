"""Supervised fine-tuning (InstructGPT step 1) with TRL's SFTTrainer on a LoRA adapter, from
demonstrations: better answers users wrote, and best-of-n selections. The loss covers the reply only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainers.common import PolicyConfig, TrainResult, fit_policy, last_logged, require
from trainers.data import Demonstration, trl_rows


@dataclass
class SFTTrainConfig(PolicyConfig):
    learning_rate: float = 1e-4
    num_epochs: float = 2.0
    min_examples: int = 8


def train_sft(
    config: SFTTrainConfig,
    demonstrations: Sequence[Demonstration],
    method: str = "sft",
    callbacks: list | None = None,
) -> TrainResult:
    require(
        len(demonstrations) >= config.min_examples,
        f"{len(demonstrations)} demonstrations; SFT needs at least {config.min_examples}. "
        "Use 'write a better answer' on replies to add some.",
    )
    from trl import SFTConfig, SFTTrainer

    return fit_policy(
        method,
        config,
        SFTTrainer,
        lambda common: SFTConfig(**common, max_length=config.max_length),
        trl_rows(demonstrations),
        callbacks=callbacks,
        summarize=lambda history, _: {"token_accuracy_last": last_logged(history, "mean_token_accuracy")},
    )
