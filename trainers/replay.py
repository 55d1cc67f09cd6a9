"""The replay term against the alignment tax, for every policy method: the method's loss plus
``ptx_coef`` times the negative log-likelihood of a replay batch (InstructGPT's PPO-ptx, where the
replay was pretraining data).

Why it is needed here: a preference update on a 135M model moves the first tokens of its answers (away
from "The ..."), and the model then drifts into another language on questions nobody rated ("What is
the capital of Italy?" answered in Italian). Replaying what the model answered before on other prompts
pins that behaviour while the preference term moves the rest.

What is replayed (``--train-replay``), no download needed:

- ``answers`` (the default): the deployed version's own greedy answers to the general prompts shipped in
  ``prompts/replay_prompts.jsonl``, asked under the users' system prompt through the served artifact,
  made once per deployed version and cached in ``DATA_DIR/replay/`` (the base model's own in
  ``DATA_DIR/hf-base/replay/``, beside its dequantized copy, keyed by the model file); plus the users' better answers
  (demonstrations). The pool is disjoint from the gate's regression facts and harmful requests and
  from the benchmark's questions (``tests/trainers/test_replay.py``), or the gate would measure what was
  trained.
- ``text``: the plain prose in ``prompts/replay_text.txt`` (pretraining style), the NLL over all of it.

``ReplayBatches`` holds the tokenized examples and hands out the next batch; ``with_replay`` makes a
TRL trainer class whose ``compute_loss`` adds the term (a subclass, not a copy of TRL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trainers.common import PolicyConfig

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
POOL_FILE = PROMPTS_DIR / "replay_prompts.jsonl"
TEXT_FILE = PROMPTS_DIR / "replay_text.txt"
ReplayKind = Literal["answers", "text"]
ANSWER_TOKENS = 40
"""Greedy answer length: the first tokens are what drifts; longer answers cost generation time."""
POOL_PROMPTS = 64
"""Pool prompts answered per version (spread over the pool): about 30 s of llama.cpp on 2 cores."""


@dataclass(frozen=True)
class ReplayExample:
    """A completion to replay after ``prompt`` (chat messages), or plain text when ``prompt`` is None."""

    completion: str
    prompt: list[dict[str, str]] | None = None
    ended: bool = True
    """Did the answer end by itself? A cut answer gets no end-of-turn token to learn."""

    def to_json(self) -> str:
        return json.dumps({"prompt": self.prompt, "completion": self.completion, "ended": self.ended})


def pool_prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in POOL_FILE.read_text(encoding="utf-8").splitlines() if line]


def text_paragraphs() -> list[str]:
    return [p.strip() for p in TEXT_FILE.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def read_examples(path: str | Path) -> list[ReplayExample]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(ReplayExample(d["completion"], d.get("prompt"), bool(d.get("ended", True))))
    return out


def write_examples(examples: Sequence[ReplayExample], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes sharing a cache write their own
    tmp.write_text("".join(e.to_json() + "\n" for e in examples), encoding="utf-8")
    tmp.replace(path)
    return path


# -- building the replay set --------------------------------------------------------------------------
def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def model_identity(model: str | None) -> list[Any]:
    """What names the answers of the base model: its weights' content key (``models.hf_base.weights_key``,
    the same wherever the file is installed) and the llama.cpp build that generates them; None is the
    embedded model."""
    from importlib.metadata import version

    from models.hf_base import weights_key

    if model is None:
        from models.embedded import embedded_model_path

        model = str(embedded_model_path())
    path = Path(model)
    return [weights_key(path) if path.exists() else model, version("llama_cpp_python")]


def prepare(
    kind: ReplayKind,
    data_dir: Path,
    *,
    version: Any = None,
    model: str | None = None,
    chat_template: str = "auto",
    system_prompt: str | None = None,
    threads: int | None = None,
    demonstrations: Sequence[Any] = (),
) -> Path:
    """The replay file for this training run, under ``data_dir/replay/``. ``answers`` generates the
    ``version``'s greedy answers to the pool (once per version, then cached) and appends the users'
    ``demonstrations``; ``text`` writes the shipped prose."""
    out_dir = data_dir / "replay"
    if kind == "text":
        paragraphs = text_paragraphs()
        return write_examples(
            [ReplayExample(p) for p in paragraphs], out_dir / f"text-{_digest(paragraphs)}.jsonl"
        )
    if kind != "answers":
        raise ValueError(f"unknown replay kind {kind!r}; choose answers or text")
    from trainers.gate import spread_sample

    prompts = spread_sample(pool_prompts(), POOL_PROMPTS)
    adapter = getattr(version, "adapter_path", None)
    if adapter is None:
        # the base model's own answers depend on the model file alone: kept beside its dequantized copy
        # (DATA_DIR/hf-base), which data directories may share, keyed by what made them
        key = _digest(prompts, system_prompt, ANSWER_TOKENS, chat_template, model_identity(model))
        cached = data_dir / "hf-base" / "replay" / f"base-answers-{key}.jsonl"
    else:
        key = _digest(prompts, system_prompt, ANSWER_TOKENS, adapter)
        cached = out_dir / f"answers-v{getattr(version, 'id', 0)}-{key}.jsonl"
    if not cached.exists():
        write_examples(
            _greedy_answers(prompts, version, model, chat_template, system_prompt, threads), cached
        )
    answers = read_examples(cached)
    demos = [ReplayExample(d.completion, list(d.prompt)) for d in demonstrations]
    if not demos:
        return cached
    return write_examples(
        answers + demos, out_dir / f"answers-v{getattr(version, 'id', 0)}-{key}-demos.jsonl"
    )


def _greedy_answers(
    prompts: Sequence[str],
    version: Any,
    model: str | None,
    chat_template: str,
    system_prompt: str | None,
    threads: int | None,
) -> list[ReplayExample]:
    """The served artifact's greedy answers (llama.cpp with the version's GGUF adapter for a GGUF base)."""
    from models.base import SamplingParams
    from models.loader import load_chat_model
    from models.versions import VersionLoader

    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    greedy = SamplingParams(temperature=0.0, max_new_tokens=ANSWER_TOKENS)
    root = load_chat_model(model, chat_template=chat_template, n_threads=threads, pool_size=1)
    try:
        served = VersionLoader(root).load(version) if version is not None else root
        out = []
        for text in prompts:
            messages = [*system, {"role": "user", "content": text}]
            result = served.generate(messages, greedy)
            out.append(ReplayExample(result.text, messages, result.finish_reason == "stop"))
        if served is not root:
            served.close()
    finally:
        root.close()
    log.info("replay: %d greedy answers of version %s", len(out), getattr(version, "id", "base"))
    return out


# -- the batches and the loss -------------------------------------------------------------------------
def tokenize(example: ReplayExample, tokenizer, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels -100 on the prompt, so the NLL covers the replayed completion only."""
    if example.prompt is None:
        ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids
        ids = ids[:max_length]
        return ids, [-100, *ids[1:]]
    if example.ended:
        from trainers.evaluate import _completion_ids

        prompt_ids, completion_ids = _completion_ids(tokenizer, example.prompt, example.completion)
    else:
        prompt_ids = tokenizer.apply_chat_template(
            list(example.prompt), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + completion_ids)[-max_length:]
    n = min(len(completion_ids), len(ids))
    return ids, [-100] * (len(ids) - n) + ids[len(ids) - n :]


class ReplayBatches:
    """The replay examples, tokenized once, handed out a batch at a time in a shuffled cycle."""

    def __init__(
        self, sequences: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, seed: int = 0
    ):
        if not sequences:
            raise ValueError("no replay examples")
        self.sequences = sequences
        self.batch_size = max(1, batch_size)
        self.pad_id = pad_id
        self._rng = random.Random(seed)
        self._order: list[int] = []

    @classmethod
    def from_config(cls, config: PolicyConfig, tokenizer) -> ReplayBatches | None:
        """None when the term is off (``ptx_coef`` 0 or no replay file)."""
        if config.ptx_coef <= 0 or not config.replay_file:
            return None
        sequences = [tokenize(e, tokenizer, config.max_length) for e in read_examples(config.replay_file)]
        sequences = [s for s in sequences if any(label != -100 for label in s[1])]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(sequences, config.replay_batch_size, pad, config.seed)

    def __len__(self) -> int:
        return len(self.sequences)

    def next_batch(self, device=None) -> dict[str, Any]:
        import torch

        picked = []
        for _ in range(min(self.batch_size, len(self.sequences))):
            if not self._order:
                self._order = list(range(len(self.sequences)))
                self._rng.shuffle(self._order)
            picked.append(self.sequences[self._order.pop()])
        width = max(len(ids) for ids, _ in picked)
        pad = [(width - len(ids)) for ids, _ in picked]
        input_ids = [ids + [self.pad_id] * p for (ids, _), p in zip(picked, pad, strict=True)]
        labels = [lab + [-100] * p for (_, lab), p in zip(picked, pad, strict=True)]
        mask = [[1] * len(ids) + [0] * p for (ids, _), p in zip(picked, pad, strict=True)]
        as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long, device=device)  # noqa: E731
        return {
            "input_ids": as_tensor(input_ids),
            "attention_mask": as_tensor(mask),
            "labels": as_tensor(labels),
        }

    def nll(self, model):
        """Mean NLL per replayed token of the next batch under ``model`` (with its adapter: the policy)."""
        device = next(model.parameters()).device
        return model(**self.next_batch(device), use_cache=False).loss


class ReplayMixin:
    """Adds ``ptx_coef * NLL(replay batch)`` to a TRL trainer's loss at every training micro-batch, and
    logs the NLL as ``replay_nll``. With ``replay=None`` it changes nothing."""

    def __init__(self, *args, replay: ReplayBatches | None = None, ptx_coef: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.replay, self.ptx_coef = replay, ptx_coef

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if self.replay is None or self.ptx_coef <= 0 or not model.training:
            return out
        nll = self.replay.nll(model)
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            metrics["train"]["replay_nll"].append(float(nll.detach()))
        if self._loss_scaled_for_accumulation(num_items_in_batch):
            # The method's loss is already a share of the accumulated batch: give the term the same share.
            nll = nll / self.current_gradient_accumulation_steps
        if return_outputs:
            loss, *rest = out
            return (loss + self.ptx_coef * nll, *rest)
        return out + self.ptx_coef * nll

    def _loss_scaled_for_accumulation(self, num_items_in_batch) -> bool:
        """transformers' own test (Trainer.training_step) of whether it will divide the loss by the
        accumulation steps afterwards (False) or the loss came scaled (True)."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is not None:
            return bool(scaled)
        return bool(
            (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
            or getattr(self, "compute_loss_func", None) is not None
        )


@cache
def with_replay(trainer_class: type) -> type:
    """``trainer_class`` with the replay term (one subclass per TRL trainer, made once)."""
    return type(
        f"{trainer_class.__name__}WithReplay", (ReplayMixin, trainer_class), {"__doc__": ReplayMixin.__doc__}
    )
