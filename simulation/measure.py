"""What a round is judged by, on held-out prompts the product never saw through feedback.

For a model version (replies from the served artifact: llama.cpp + its GGUF adapter, through
``ModelService`` as the Compare tab's "versions" mode does):

- gold: mean gold reward of its replies (the product's default sampling; fixed seeds, the same for
  every version, so differences are not sampling luck);
- win rate against the base: share of (prompt, seed) pairs where its reply has the higher gold reward
  than the base's reply (ties count half);
- KL to the base, nats per reply: Monte-Carlo estimate sum_t log pi(y_t) - log pi_base(y_t) over its own
  samples drawn at temperature 1 without truncation (so they are samples of pi), log-probabilities from
  the fp32 transformers model with the PEFT adapter and with the adapter disabled. A reply cut at the
  token limit gets no end-of-turn term;
- proxy: the mean score the reward model (the latest one the cycle trained) gives its replies, next to
  the base's replies under the same reward model (Gao et al.: the proxy keeps rising when the gold
  reward stops, which is over-optimisation);
- capability: share of factual questions (``loop_capability.jsonl``) answered correctly, greedy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from models.base import SamplingParams
from models.service import ModelService
from simulation.oracles import Oracle
from simulation.tasks import Task
from trainers.gate import FactCheck

KL_SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0)


def win_rate(scores: Sequence[float], base_scores: Sequence[float]) -> float:
    """Share of paired replies where ``scores`` beats ``base_scores`` (ties count half)."""
    if len(scores) != len(base_scores) or not scores:
        raise ValueError("win rate needs the same, non-zero number of scores on both sides")
    wins = sum(1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, base_scores, strict=True))
    return wins / len(scores)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class Measurement:
    """One version's figures (the module's docstring defines each)."""

    version_id: int
    gold: float
    win_rate: float
    """Against the base; the base itself gets 0.5."""
    kl: float
    """Nats per reply to the base; 0 for the base."""
    capability: float
    proxy: float | None = None
    proxy_base: float | None = None
    gold_scores: list[float] = field(default_factory=list)
    reply_words: float = 0.0
    seconds: float = 0.0

    @property
    def proxy_gain(self) -> float | None:
        return None if self.proxy is None or self.proxy_base is None else self.proxy - self.proxy_base

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["proxy_gain"] = self.proxy_gain
        return d


@dataclass
class Evaluator:
    service: ModelService
    oracle: Oracle
    heldout: Sequence[Task]
    capability_tasks: Sequence[Task]
    params: SamplingParams
    hf_base_dir: Path
    system_prompt: str | None = None
    samples_per_prompt: int = 2
    seed: int = 1234
    base_replies: list[str] = field(default_factory=list)
    base_gold: list[float] = field(default_factory=list)

    # -- replies from the served artifact -----------------------------------------------------------
    def _pairs(self) -> list[tuple[Task, int]]:
        return [(t, self.seed + j) for t in self.heldout for j in range(self.samples_per_prompt)]

    def replies(self, version_id: int) -> list[str]:
        return [
            self.service.generate(
                task.messages(self.system_prompt), replace(self.params, seed=seed), version_id=version_id
            ).text
            for task, seed in self._pairs()
        ]

    def kl_samples(self, version_id: int) -> list[tuple[str, bool]]:
        """One pure sample (temperature 1, no top-k/top-p) per held-out prompt, and whether it ended."""
        params = replace(KL_SAMPLING, max_new_tokens=self.params.max_new_tokens)
        out = []
        for i, task in enumerate(self.heldout):
            r = self.service.generate(
                task.messages(self.system_prompt), replace(params, seed=self.seed + i), version_id=version_id
            )
            out.append((r.text, r.finish_reason == "stop"))
        return out

    def capability(self, version_id: int) -> list[bool]:
        greedy = replace(self.params, temperature=0.0, seed=None)
        return [
            FactCheck(t.prompt, t.answers).correct(
                self.service.generate(t.messages(self.system_prompt), greedy, version_id=version_id).text
            )
            for t in self.capability_tasks
        ]

    # -- one version ---------------------------------------------------------------------------------
    def measure_base(self, version_id: int) -> Measurement:
        t0 = time.perf_counter()
        self.base_replies = self.replies(version_id)
        self.base_gold = [
            self.oracle.score(t, r) for (t, _), r in zip(self._pairs(), self.base_replies, strict=True)
        ]
        cap = self.capability(version_id)
        return Measurement(
            version_id=version_id,
            gold=mean(self.base_gold),
            win_rate=0.5,
            kl=0.0,
            capability=mean([float(c) for c in cap]),
            gold_scores=list(self.base_gold),
            reply_words=mean([len(r.split()) for r in self.base_replies]),
            seconds=time.perf_counter() - t0,
        )

    def measure(self, version_id: int, adapter_dir: str | None, reward_adapter: Path | None) -> Measurement:
        if not self.base_gold:
            raise RuntimeError("measure the base version first (measure_base)")
        t0 = time.perf_counter()
        replies = self.replies(version_id)
        gold = [self.oracle.score(t, r) for (t, _), r in zip(self._pairs(), replies, strict=True)]
        cap = self.capability(version_id)
        kl = 0.0
        if adapter_dir:
            samples = self.kl_samples(version_id)
            kl = kl_to_base(
                self.hf_base_dir, adapter_dir, [t.messages(self.system_prompt) for t in self.heldout], samples
            )
        m = Measurement(
            version_id=version_id,
            gold=mean(gold),
            win_rate=win_rate(gold, self.base_gold),
            kl=kl,
            capability=mean([float(c) for c in cap]),
            gold_scores=gold,
            reply_words=mean([len(r.split()) for r in replies]),
        )
        if reward_adapter is not None:
            m.proxy, m.proxy_base = self.proxy(reward_adapter, replies)
        m.seconds = time.perf_counter() - t0
        return m

    def proxy(self, reward_adapter: Path, replies: Sequence[str]) -> tuple[float, float]:
        """Mean reward-model score of ``replies`` and of the base's replies, under the same reward model."""
        from trainers.reward import RewardModel

        rm = RewardModel.load(reward_adapter, self.hf_base_dir)
        prompts = [t.messages(self.system_prompt) for t, _ in self._pairs()]
        return mean(rm.score(prompts, list(replies))), mean(rm.score(prompts, self.base_replies))


def kl_to_base(
    hf_base_dir: Path,
    adapter_dir: str | Path,
    prompts: Sequence[list[dict[str, str]]],
    samples: Sequence[tuple[str, bool]],
) -> float:
    """Monte-Carlo KL(pi || base) in nats per reply over pi's own samples (see the module docstring)."""
    import torch

    from trainers.evaluate import load_policy_for_eval, reference_of

    model, tokenizer = load_policy_for_eval(hf_base_dir, adapter_dir)
    total = 0.0
    with torch.no_grad():
        for prompt, (text, ended) in zip(prompts, samples, strict=True):
            prompt_ids = tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            reply_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ended:
                reply_ids = [*reply_ids, tokenizer.eos_token_id]
            if not reply_ids:
                continue
            ids = torch.tensor([prompt_ids + reply_ids])
            n = len(reply_ids)

            def logp(m, ids=ids, n=n) -> float:
                logits = m(input_ids=ids).logits[0, -n - 1 : -1].float()
                return float(torch.log_softmax(logits, -1).gather(1, ids[0, -n:, None]).sum())

            policy = logp(model)
            with reference_of(model) as ref:
                total += policy - logp(ref)
    del model
    return total / len(samples) if samples else 0.0
