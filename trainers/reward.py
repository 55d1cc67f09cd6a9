"""Reward model: TRL RewardTrainer with a LoRA sequence-classification head, trained on preference pairs
with InstructGPT's pairwise loss -log sigmoid(r(chosen) - r(rejected)).

Rankings arrive as their pairs (K*(K-1)/2 without ties; tied replies give none), each weighted 1/P,
so that one ranking weighs like one comparison (InstructGPT section 3.5: 1/C(K,2) without ties); one
user's different 1-7 scores on replies to the same prompt arrive the same way (source "score"). TRL's
trainer has no per-example weights, so ``WeightedRewardTrainer`` adds them (a weighted mean of the
per-pair losses). ``RewardModel`` loads a trained adapter for scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.common import (
    CommonConfig,
    TrainingDataError,
    TrainResult,
    fit_adapter,
    last_logged,
    seed_everything,
)
from trainers.data import Messages, PreferencePair, preference_rows, to_dataset

log = logging.getLogger(__name__)


@dataclass
class RewardTrainConfig(CommonConfig):
    learning_rate: float = 1e-4
    num_epochs: float = 1.0
    """One pass: a clear preference is learned within it (loss < 0.01 after a third of the pass here)."""
    min_examples: int = 16
    center_rewards_coefficient: float | None = 0.01
    """Keeps rewards near zero (the RewardTrainer option); helps the scores stay comparable across runs."""


def _weighted_trainer_class():
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class WeightedCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            out["weight"] = torch.tensor([float(e.get("weight", 1.0)) for e in examples], dtype=torch.float)
            return out

    class WeightedRewardTrainer(RewardTrainer):
        """RewardTrainer whose pairwise loss is a weighted mean (weights from the ``weight`` column)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = WeightedCollator(
                pad_token_id=self.processing_class.pad_token_id,
                pad_to_multiple_of=self.args.pad_to_multiple_of,
            )

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "weight"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight", None)
            if weight is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # Re-use the parent's metrics bookkeeping, then replace its unweighted loss.
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            per_pair = -nn.functional.logsigmoid(chosen - rejected)
            weighted = (per_pair * weight).sum() / weight.sum().clamp(min=1e-8)
            if self.args.center_rewards_coefficient is not None:
                weighted = weighted + self.args.center_rewards_coefficient * torch.mean(
                    (chosen + rejected) ** 2
                )
            return (weighted, outputs) if return_outputs else weighted

    return WeightedRewardTrainer


def train_reward_model(
    config: RewardTrainConfig,
    pairs: Sequence[PreferencePair],
    heldout: Sequence[PreferencePair] = (),
    callbacks: list | None = None,
) -> TrainResult:
    """Train a LoRA reward model; write the adapter (+ metrics.json) to ``config.output_dir``."""
    if len(pairs) < config.min_examples:
        raise TrainingDataError(
            f"{len(pairs)} preference pairs; the reward model needs at least {config.min_examples}. "
            "Collect more A/B votes, rankings or better answers."
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig

    tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir)
    seed_everything(config.seed)  # the new score head's weights are drawn as the model loads
    model = _quietly(
        AutoModelForSequenceClassification.from_pretrained,
        config.base_model_dir,
        num_labels=1,
        **_cpu_float32(config.resolved_device()),
    )
    peft_config = config.lora_config("SEQ_CLS", model.config.num_hidden_layers)
    if config.init_adapter:  # warm start: continue the previous cycle's reward model (score head included)
        from peft import PeftModel

        model.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
        peft_config = None

    def make_trainer(work_dir):
        args = RewardConfig(
            **config.trainer_kwargs(work_dir),
            max_length=config.max_length,
            center_rewards_coefficient=config.center_rewards_coefficient,
        )
        return _weighted_trainer_class()(
            model=model,
            args=args,
            train_dataset=to_dataset(preference_rows(pairs, with_weight=True)),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    def summarize(history, trainer):
        metrics: dict[str, Any] = {
            "heldout_examples": len(heldout),
            "train_accuracy": last_logged(history, "accuracy"),
        }
        if heldout:
            scorer = RewardModel.from_trainer(trainer.model, tokenizer, config.max_length)
            metrics.update(pairwise_accuracy(scorer, heldout))
        return metrics

    result = fit_adapter("reward", config, make_trainer, tokenizer, examples=len(pairs), summarize=summarize)
    log.info("reward model: held-out accuracy %s", result.metrics.get("heldout_accuracy"))
    return result


def _quietly(load, *args, **kwargs):
    """The base has no score head: transformers' "newly initialized" warning is expected (LoRA trains the
    head, or the adapter brings it), so it is silenced for this one call."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def _cpu_float32(device: str) -> dict[str, Any]:
    """float32 weights on a CPU, whatever the checkpoint's dtype: a GPTQ checkpoint's is bfloat16, and on
    this project's CPUs a bfloat16 LoRA step on it took 30-90 s where float32 took about 1 s."""
    return {"dtype": torch.float32} if device == "cpu" else {}


class RewardModel:
    """Scores (prompt, reply) pairs with a trained reward adapter. Higher is better."""

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 8):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(cls, adapter_dir: str | Path, base_model_dir: str | Path | None = None, max_length: int = 512):
        """Load base + reward adapter, merged for speed. ``base_model_dir`` defaults to the adapter's record."""
        from peft import PeftConfig, PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter_dir} is not a reward-model adapter (no adapter_config.json)")
        base = str(base_model_dir or PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        model = _quietly(
            AutoModelForSequenceClassification.from_pretrained,
            base,
            num_labels=1,
            **_cpu_float32("cuda" if torch.cuda.is_available() else "cpu"),
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(model, adapter_dir)
        # PEFT cannot merge LoRA into GPTQ 4-bit layers: there the adapter stays a separate (slower) branch.
        if getattr(model.config, "quantization_config", None) is None:
            model = model.merge_and_unload()
        return cls(model, tokenizer, max_length)

    @classmethod
    def from_trainer(cls, model, tokenizer, max_length: int = 512) -> RewardModel:
        return cls(model, tokenizer, max_length)

    @torch.no_grad()
    def score(self, prompts: Sequence[Messages], completions: Sequence[str]) -> list[float]:
        """One scalar per (prompt, completion), tokenized exactly as the RewardTrainer tokenized training pairs."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        scores: list[float] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(prompts), self.batch_size):
            batch = []
            for prompt, completion in zip(
                prompts[start : start + self.batch_size],
                completions[start : start + self.batch_size],
                strict=True,
            ):
                messages = [*prompt, {"role": "assistant", "content": completion}]
                ids = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)[
                    "input_ids"
                ]
                batch.append(ids[-self.max_length :])
            width = max(len(x) for x in batch)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=device)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.squeeze(-1)
            scores.extend(float(v) for v in logits.float().cpu())
        return scores

    def __call__(self, prompts: list[Messages], completions: list[Any], **_: Any) -> list[float]:
        """The TRL reward-function signature (RLOO/GRPO): completions are message lists or strings."""
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return self.score(prompts, texts)


def pairwise_accuracy(scorer: RewardModel, pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Held-out accuracy (chosen scored above rejected), plain and weighted, and the mean margin."""
    chosen = scorer.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = scorer.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    weights = [p.weight for p in pairs]
    return {
        "heldout_accuracy": sum(wins) / len(wins),
        "heldout_weighted_accuracy": sum(w for w, ok in zip(weights, wins, strict=True) if ok) / sum(weights),
        "heldout_margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(wins),
    }
