"""Supervised fine-tuning (InstructGPT step 1) with TRL's SFTTrainer on a LoRA adapter, from
demonstrations: better answers users wrote, and best-of-n selections. The loss covers the reply only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainers.common import (
    CommonConfig,
    Stopwatch,
    TrainingDataError,
    TrainResult,
    atomic_output_dir,
    last_logged,
    load_policy,
    loss_curve,
    save_adapter,
    write_metrics,
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

    clock = Stopwatch()
    model, tokenizer, peft_config = load_policy(config)
    with atomic_output_dir(config.output_dir) as tmp:
        args = SFTConfig(**config.trainer_kwargs(tmp), max_length=config.max_length)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=to_dataset(trl_rows(demonstrations)),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
        trainer.train()
        save_adapter(trainer, tokenizer, tmp)
        history = trainer.state.log_history
        metrics = {
            "method": method,
            "examples": len(demonstrations),
            "loss_curve": loss_curve(history),
            "token_accuracy_last": last_logged(history, "mean_token_accuracy"),
            "train_seconds": clock.seconds,
            "config": config.to_dict(),
        }
        write_metrics(tmp, metrics)
    return TrainResult(method, Path(config.output_dir), metrics)
