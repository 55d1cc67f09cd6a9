"""What every training method shares: the LoRA and optimisation settings, device and precision
choices that work on a CPU and on a GPU, atomic output directories, and the result record.

Defaults follow shared/FACTS.md: on CPU ``use_cpu=True``, no gradient checkpointing, no reporting
integrations, and bf16 decided on purpose: "auto" autocasts to bf16 on a GPU that supports it and on a
CPU with AMX tiles (bf16 matrix units), and keeps fp32 elsewhere, where bf16 is emulated and slower (an
AVX2-only CPU). LoRA goes on the upper ``lora_layers`` share of the blocks only: the lower layers then
need no backward pass at all.

``PolicyConfig`` and ``fit_policy`` are what the policy methods (DPO, KTO, SFT, RLOO, best-of-n) share:
the model to optimise, the replay term against the alignment tax (``trainers.replay``) and the TRL
trainer built around them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainers.data import to_dataset

# All linear layers of a llama-style block: attention and MLP (what the GGUF LoRA export understands).
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingDataError(ValueError):
    """Not enough (or unusable) data to train; the message says how much there is and how much is needed."""


@dataclass
class CommonConfig:
    """Settings shared by every method. Each method's config subclasses this and documents its own."""

    output_dir: str = "adapter"
    """Where the finished adapter directory goes (written to a temporary sibling, then renamed)."""
    base_model_dir: str = ""
    """A plain Hugging Face checkpoint of the served base model (see ``trainers.base_model``)."""
    init_adapter: str | None = None
    """Continue from this PEFT adapter (e.g. the deployed version) instead of a fresh LoRA."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LLAMA_LORA_TARGETS
    learning_rate: float = 5e-5
    num_epochs: float = 1.0
    max_steps: int = -1
    """If > 0, stop after this many optimiser steps (overrides ``num_epochs``)."""
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    seed: int = 0
    threads: int | None = None
    """torch CPU threads; None keeps torch's default. Cap it when training beside a serving process."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu" or "cuda"."""
    bf16: bool | None = None
    """None ("auto"): bf16 on a GPU that supports it or a CPU with AMX, fp32 otherwise."""
    lora_layers: float = 1.0
    """Share of the transformer blocks, counted from the top, that get LoRA (1 = all). The settings'
    default (``--train-lora-layers``) is what the cycle uses."""
    logging_steps: int = 1
    min_examples: int = 8
    """Refuse to train on fewer examples than this (a clear error instead of a meaningless adapter)."""

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_bf16(self) -> bool:
        if self.bf16 is not None:
            return self.bf16
        if self.resolved_device() == "cpu":
            return cpu_has_amx()
        import torch

        return torch.cuda.is_bf16_supported()

    def trainer_kwargs(self, work_dir: Path) -> dict[str, Any]:
        """Keyword arguments common to every TRL config class (TRL's scratch files go to ``work_dir/trl``)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return dict(
            output_dir=str(Path(work_dir) / "trl"),
            use_cpu=self.resolved_device() == "cpu",
            bf16=self.resolved_bf16(),
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_epochs,
            max_steps=self.max_steps,
            logging_steps=self.logging_steps,
            seed=self.seed,
            dataloader_num_workers=0,
            disable_tqdm=False,
        )

    def lora_config(self, task_type: str, n_layers: int | None = None):
        """LoRA on ``lora_targets`` of the upper ``lora_layers`` share of the ``n_layers`` blocks."""
        from peft import LoraConfig

        upper = None
        if n_layers and self.lora_layers < 1:
            keep = max(1, math.ceil(self.lora_layers * n_layers))
            upper = list(range(n_layers - keep, n_layers))
        return LoraConfig(
            task_type=task_type,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_targets),
            layers_to_transform=upper,
            layers_pattern="layers" if upper else None,
            modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d


@dataclass
class PolicyConfig(CommonConfig):
    """What every policy method adds: the replay term (InstructGPT's PPO-ptx, for every method)."""

    ptx_coef: float = 0.0
    """The method's loss plus ``ptx_coef`` times the NLL of a replay batch (``trainers.replay``); 0 = off.
    The settings' default (``--ptx-coef``) is what the cycle and the train command use."""
    replay_file: str | None = None
    """The replay examples (JSON lines ``trainers.replay`` writes); None = no replay term."""
    replay_batch_size: int = 4


@dataclass
class TrainResult:
    """What a training run produced. ``metrics`` is also written to ``adapter_dir/metrics.json``."""

    method: str
    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def same_named(source: object, *names: str) -> dict[str, Any]:
    """``{name: source.<name>}``: the fields handed on under the same name (to a TRL config class, to a
    request), each written once."""
    return {name: getattr(source, name) for name in names}


def write_metrics(directory: Path, metrics: dict[str, Any]) -> None:
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def read_metrics(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """(step, loss) points from a transformers Trainer log history."""
    return [
        {"step": int(h["step"]), "loss": float(h["loss"])}
        for h in log_history
        if "loss" in h and "step" in h and "train_loss" not in h
    ]


def cpu_has_amx() -> bool:
    """Does this CPU have AMX bf16 tiles (where bf16 autocast pays)? False when torch cannot tell."""
    try:
        import torch

        return bool(torch._C._cpu._get_cpu_capability().get("amx_bf16"))
    except (AttributeError, RuntimeError):
        return False


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, as the Trainer does, but before the model is built:
    a fresh LoRA's and a reward model's score head's initial weights are drawn while the TRL trainer is
    constructed or the model loaded, before the Trainer seeds, so without this two runs on the same data
    start from different weights and a gate's decision is not reproducible."""
    from transformers import set_seed

    set_seed(seed)


def load_policy(config: CommonConfig):
    """The causal LM to optimise: the base plus a fresh LoRA, or the base plus ``init_adapter`` (trainable).

    Returns (model, tokenizer, peft_config): TRL trainers receive ``peft_config`` for a fresh LoRA, in which
    case their reference model is the base with the adapter disabled (no second copy of the model). With
    ``init_adapter`` the reference is a frozen copy of that adapter, i.e. the previous policy.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.gptq import prepare_for_training

    seed_everything(config.seed)  # the fresh LoRA's initial weights (TRL makes them before Trainer seeds)
    # fp32 weights even with bf16: the Trainer autocasts the matrix products, while the LoRA weights and
    # their optimiser state stay fp32 (bf16 LoRA updates of 1e-4 would round away).
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(config.base_model_dir, dtype=torch.float32)
    # A GPTQ base trains its LoRA on the 4-bit weights; its CPU layers must stay differentiable.
    prepare_for_training(model)
    if config.init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
        return model, tokenizer, None
    return model, tokenizer, config.lora_config("CAUSAL_LM", model.config.num_hidden_layers)


def save_adapter(trainer, tokenizer, directory: Path) -> None:
    """Save only the LoRA weights (+ tokenizer, so the adapter directory is self-describing)."""
    trainer.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    shutil.rmtree(directory / "trl", ignore_errors=True)


def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    for h in reversed(log_history):
        if key in h:
            return float(h[key])
    return None


def mean_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    values = [float(h[key]) for h in log_history if key in h]
    return sum(values) / len(values) if values else None


@contextlib.contextmanager
def atomic_output_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success it is renamed to ``final``.

    A crash, a kill or an exception leaves no half-written ``final`` behind (the temporary directory
    is removed on exceptions; a killed process leaves only a ``.tmp-*`` sibling, which is ignored
    and cleaned by the next run). An existing ``final`` is never overwritten.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists; choose another output directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, final)  # atomic on the same file system


def fit_adapter(
    method: str,
    config: CommonConfig,
    make_trainer: Callable[[Path], Any],
    tokenizer,
    *,
    examples: int,
    summarize: Callable[[list[dict[str, Any]], Any], dict[str, Any]] | None = None,
) -> TrainResult:
    """The part every method shares: build the TRL trainer in a temporary directory, train, save the
    adapter and ``metrics.json`` there, and rename it into place (``atomic_output_dir``).

    ``make_trainer(work_dir)`` returns the configured TRL trainer; ``summarize(log_history, trainer)`` adds
    the method's own metrics (reward margins, KL, ...) to the loss curve and wall time.
    """
    clock = Stopwatch()
    with atomic_output_dir(config.output_dir) as tmp:
        trainer = make_trainer(tmp)
        trainer.train()
        save_adapter(trainer, tokenizer, tmp)
        history = trainer.state.log_history
        metrics = {"method": method, "examples": examples, "loss_curve": loss_curve(history)}
        if summarize is not None:
            metrics.update(summarize(history, trainer))
        metrics.update(train_seconds=clock.seconds, config=config.to_dict())
        write_metrics(tmp, metrics)
    return TrainResult(method, Path(config.output_dir), metrics)


def fit_policy(
    method: str,
    config: PolicyConfig,
    trainer_class: type,
    make_args: Callable[[dict[str, Any]], Any],
    rows: list[dict[str, Any]],
    *,
    callbacks: list | None = None,
    summarize: Callable[[list[dict[str, Any]], Any], dict[str, Any]] | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train a policy method on ``rows`` (TRL's dataset rows, one per example): the model from
    ``load_policy``, ``trainer_class`` with the replay term (``trainers.replay.with_replay``), its TRL
    config from ``make_args(common trainer kwargs)``; then ``fit_adapter``. ``trainer_kwargs`` go to the
    trainer (e.g. RLOO's ``reward_funcs``)."""
    from trainers import replay as rp

    train_dataset = to_dataset(rows)
    model, tokenizer, peft_config = load_policy(config)
    batches = rp.ReplayBatches.from_config(config, tokenizer)
    trainer_class = rp.with_replay(trainer_class)

    def make_trainer(work_dir: Path):
        return trainer_class(
            model=model,
            args=make_args(config.trainer_kwargs(work_dir)),
            train_dataset=train_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
            replay=batches,
            ptx_coef=config.ptx_coef,
            **trainer_kwargs,
        )

    def summary(history: list[dict[str, Any]], trainer) -> dict[str, Any]:
        metrics = summarize(history, trainer) if summarize else {}
        if batches is not None:
            metrics.update(
                ptx_coef=config.ptx_coef,
                replay_examples=len(batches),
                replay_nll_mean=mean_logged(history, "replay_nll"),
            )
        return metrics

    return fit_adapter(method, config, make_trainer, tokenizer, examples=len(rows), summarize=summary)


def margin_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """DPO's and KTO's implicit reward margins, as logged."""
    return {
        "reward_margin_last": last_logged(history, "rewards/margins"),
        "reward_margin_mean": mean_logged(history, "rewards/margins"),
    }


def require(enough: bool, message: str) -> None:
    """Refuse to train on too little data, with a message saying how much there is and is needed."""
    if not enough:
        raise TrainingDataError(message)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
