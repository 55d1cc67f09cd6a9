"""Supervised fine-tuning (InstructGPT step 1) with TRL's SFTTrainer on a LoRA adapter, from
demonstrations: better answers users wrote, and best-of-n selections. The loss covers the reply only.
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
)
from trainers.data import Demonstration, to_dataset, trl_rows


@dataclass
class SFTTrainConfig(CommonConfig):
    learning_rate: float = 1e-4
    num_epochs: float = 2.0
    min_examples: int = 8


def train_sft(
    config: SFTTrainConfig,
    demonstrations: Sequence[Demonstration],
    method: str = "sft",
    callbacks: list | None = None,
) -> TrainResult:
    if len(demonstrations) < config.min_examples:
        raise TrainingDataError(
            f"{len(demonstrations)} demonstrations; SFT needs at least {config.min_examples}. "
            "Use 'write a better answer' on replies to add some."
        )
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, peft_config = load_policy(config)

    def make_trainer(work_dir):
        args = SFTConfig(**config.trainer_kwargs(work_dir), max_length=config.max_length)
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=to_dataset(trl_rows(demonstrations)),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    def summarize(history, _trainer):
        return {"token_accuracy_last": last_logged(history, "mean_token_accuracy")}

    return fit_adapter(
        method, config, make_trainer, tokenizer, examples=len(demonstrations), summarize=summarize
    )
