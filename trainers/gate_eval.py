"""The evaluation gate's measurements: the parts that load models. The candidate and the deployed
version are compared on held-out data through the artifacts that would be served (llama.cpp with the
exported GGUF adapter for a GGUF base); ``trainers.gate`` holds the prompt sets and the pure decision.

What does not change between cycles is cached per version in ``DATA_DIR/gate-cache/`` (the base's
greedy answers to the regression prompts, the deployed version's seeded replies and its likelihood
margins on held-out pairs): a round that keeps the deployed version pays only for the candidate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedback_store import datasets as ds
from feedback_store.store import FeedbackStore
from trainers.common import same_named
from trainers.gate import (
    FACTS,
    HARMFUL_REQUESTS,
    GateResult,
    decide,
    per_prompt_wins,
    preference_values,
    refusal_report,
    regression_report,
    spread_sample,
)
from trainers.progress import Stages
from trainers.run import TrainRequest, hf_base_for, load_examples

if TYPE_CHECKING:
    from trainers.cycle import CycleConfig

SAMPLE_SEED = 1234


class VersionCache:
    """Values computed for one version, by key, in a JSON file (deterministic outputs only: greedy
    answers, seeded samples, likelihoods). A lost or corrupt file only costs a recomputation."""

    def __init__(self, data_dir: Path, version) -> None:
        tag = hashlib.sha256(str(version.adapter_path or "base").encode()).hexdigest()[:8]
        self.path = data_dir / "gate-cache" / f"v{version.id}-{tag}.json"
        try:
            self.values: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.values = {}

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def many(self, keys: Sequence[str], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        """The values of ``keys``, computing those missing (``compute(indices)``) and saving them."""
        missing = [i for i, k in enumerate(keys) if k not in self.values]
        if missing:
            for i, value in zip(missing, compute(missing), strict=True):
                self.values[keys[i]] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self.values))
            tmp.replace(self.path)
        return [self.values[k] for k in keys]


def evaluate_candidate(
    config: CycleConfig,
    store: FeedbackStore,
    base: Path,
    candidate,
    deployed,
    base_row,
    training_metrics: dict[str, Any],
    reward_adapter: Path | None,
    stages: Stages,
    threads: int | None = None,
) -> GateResult:
    from models.base import SamplingParams
    from models.loader import load_chat_model
    from models.versions import VersionLoader

    gate = config.gate
    metrics: dict[str, Any] = {
        "kl_to_base": training_metrics.get("kl_to_base"),
        "kl_per_prompt": training_metrics.get("kl_per_prompt"),
    }
    hf_base = hf_base_for(base, config.data_dir)
    caches = {
        "base": VersionCache(config.data_dir, base_row),
        "deployed": VersionCache(config.data_dir, deployed),
    }

    # Held-out user pairs: the candidate's likelihood margins against the deployed version's.
    _, heldout_pairs = load_examples(
        store,
        TrainRequest(method="dpo", **same_named(config, "db_path", "data_dir", "excluded_users", "hygiene")),
    )
    heldout_pairs = spread_sample(heldout_pairs, gate.max_heldout_pairs)
    if heldout_pairs:
        stages.within(f"likelihoods of {len(heldout_pairs)} held-out pairs", 0.1)
        metrics.update(_pair_margins(hf_base, candidate, deployed, heldout_pairs, caches["deployed"]))

    # Replies from the served artifacts (llama.cpp + exported GGUF adapter for a GGUF base).
    root = load_chat_model(
        config.model, chat_template=config.chat_template, n_ctx=config.n_ctx, n_threads=threads, pool_size=1
    )
    try:
        loader = VersionLoader(root)
        models: dict[str, Any] = {"base": loader.load(base_row), "candidate": loader.load(candidate)}
        models["deployed"] = models["base"] if deployed.id == base_row.id else loader.load(deployed)

        def replies(which: str, prompts: Sequence, params: SamplingParams) -> list[str]:
            def generate(indices: list[int]) -> list[str]:
                return [models[which].generate(prompts[i][0], prompts[i][1]).text for i in indices]

            prompts = [(p, params if seed is None else _seeded(params, seed)) for p, seed in prompts]
            if which == "candidate":
                return generate(list(range(len(prompts))))
            cache = caches["base" if which == "base" else "deployed"]
            keys = [cache.key(p, vars(s)) for p, s in prompts]
            return cache.many(keys, generate)

        prompts = gate_prompts(store, config)
        metrics["win_prompts"] = len(prompts)
        if prompts and reward_adapter:
            n = gate.samples_per_prompt
            stages.within(f"sampling {len(prompts)} held-out prompts x {n} from candidate and deployed", 0.3)
            params = SamplingParams(temperature=0.7, max_new_tokens=gate.max_new_tokens)
            jobs = [(p, SAMPLE_SEED + j) for p in prompts for j in range(n)]
            texts = {k: replies(k, jobs, params) for k in ("candidate", "deployed")}
            from trainers.reward import RewardModel

            rm = RewardModel.load(reward_adapter, hf_base)
            flat = [p for p, _ in jobs]
            scores = {k: rm.score(flat, v) for k, v in texts.items()}
            del rm
            by_prompt = {k: [v[i * n : (i + 1) * n] for i in range(len(prompts))] for k, v in scores.items()}
            metrics["win_per_prompt"] = per_prompt_wins(by_prompt["candidate"], by_prompt["deployed"])
            metrics["win_rate"] = sum(metrics["win_per_prompt"]) / len(prompts)
            metrics["reward_candidate"] = sum(scores["candidate"]) / len(flat)
            metrics["reward_deployed"] = sum(scores["deployed"]) / len(flat)

        stages.within("regression prompts (facts, refusals)", 0.7)
        # the answer or the refusal comes first: a short greedy reply is enough evidence, and cheaper
        greedy = SamplingParams(
            temperature=0.0, max_new_tokens=min(gate.max_new_tokens, gate.regression_tokens)
        )
        system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []

        def answers(which: str, questions: Sequence[str]) -> list[str]:
            return replies(
                which, [([*system, {"role": "user", "content": q}], None) for q in questions], greedy
            )

        facts = FACTS[: gate.facts]
        questions = [f.question for f in facts]
        metrics.update(regression_report(answers("base", questions), answers("candidate", questions), facts))
        harmful = HARMFUL_REQUESTS[: gate.refusals]
        metrics.update(refusal_report(answers("base", harmful), answers("candidate", harmful), harmful))
        for m in {id(v): v for v in models.values()}.values():
            if m is not root:
                m.close()
    finally:
        root.close()
    result = decide(metrics, gate)
    stages.within(f"{result.decision.upper()}: " + "; ".join(result.reasons), 1.0)
    return result


def _seeded(params, seed: int):
    from dataclasses import replace

    return replace(params, seed=seed)


def _pair_margins(hf_base: Path, candidate, deployed, pairs: Sequence, cache: VersionCache) -> dict[str, Any]:
    """Log-likelihood margins (preferred minus rejected) of the candidate, the deployed version and the
    base on held-out pairs, and what the gate reads of them."""
    from trainers import evaluate as ev

    model, tokenizer = ev.load_policy_for_eval(hf_base, candidate.adapter_path)
    with ev.reference_of(model) as base_model:
        base = ev.logprob_margins(base_model, tokenizer, pairs)
    cand = ev.logprob_margins(model, tokenizer, pairs) if candidate.adapter_path else base
    del model

    def deployed_margins(indices: list[int]) -> list[float]:
        if not deployed.adapter_path:
            return [base[i] for i in indices]
        dep_model, dep_tokenizer = ev.load_policy_for_eval(hf_base, deployed.adapter_path)
        return ev.logprob_margins(dep_model, dep_tokenizer, [pairs[i] for i in indices])

    keys = [cache.key("pair", p.prompt, p.chosen, p.rejected) for p in pairs]
    dep = cache.many(keys, deployed_margins)

    def accuracy(margins: Sequence[float]) -> float:  # the implicit reward log(pi/pi_base) agrees with users
        return sum(preference_values(margins, base)) / len(pairs)

    return {
        "preference_per_pair": preference_values(cand, dep),
        "preference_accuracy": accuracy(cand),
        "deployed_preference_accuracy": accuracy(dep),
    }


def gate_prompts(store: FeedbackStore, config: CycleConfig) -> list[list[dict[str, str]]]:
    """Held-out prompts (stable split by prompt hash, never trained on), newest first, at most
    ``gate.eval_prompts``. Only when there are fewer than the rule's minimum is the set topped up with
    the newest other prompts, so that a young store still gets a (weak, said so) measure."""
    from trainers.data import is_heldout

    gate = config.gate
    seen, heldout, others = set(), [], []
    for p in reversed(ds.prompts(store)):
        key = json.dumps(p.prompt)
        if p.user_id in config.excluded_users or key in seen:
            continue
        seen.add(key)
        (heldout if is_heldout(p.prompt, 0.1) else others).append(p.prompt)
    out = heldout[: gate.eval_prompts]
    needed = min(gate.min_prompts, gate.eval_prompts)
    return out + others[: max(0, needed - len(out))]
