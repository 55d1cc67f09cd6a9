"""The evaluation gate's measurements: the parts that load models. The candidate and the deployed
version are compared on held-out data through the artifacts that would be served (llama.cpp with the
exported GGUF adapter for a GGUF base); ``trainers.gate`` holds the prompt sets and the pure decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedback_store import datasets as ds
from feedback_store.store import FeedbackStore
from trainers.gate import (
    FACTS,
    HARMFUL_REQUESTS,
    GateResult,
    decide,
    refusal_report,
    regression_report,
    spread_sample,
)
from trainers.progress import Stages
from trainers.run import TrainRequest, hf_base_for, load_examples

if TYPE_CHECKING:
    from trainers.cycle import CycleConfig


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
) -> GateResult:
    from models.base import SamplingParams
    from models.loader import load_chat_model
    from models.versions import VersionLoader
    from trainers import evaluate as ev

    metrics: dict[str, Any] = {"kl_to_base": training_metrics.get("kl_to_base")}
    hf_base = hf_base_for(base, config.data_dir)

    # Preference accuracy: likelihood of the preferred reply over the rejected one, held-out pairs.
    _, heldout_pairs = load_examples(
        store,
        TrainRequest(
            method="dpo",
            db_path=config.db_path,
            data_dir=config.data_dir,
            excluded_users=config.excluded_users,
            hygiene=config.hygiene,
        ),
    )
    heldout_pairs = spread_sample(heldout_pairs, config.gate.max_heldout_pairs)
    if heldout_pairs:
        stages.within(f"preference accuracy on {len(heldout_pairs)} held-out pairs", 0.1)
        # DPO's implicit reward log(pi / pi_base): does the version raise the preferred reply more than the
        # rejected one, relative to the base? (The base itself scores a coin flip, 0.5, by definition.)
        for key, version in (("preference_accuracy", candidate), ("deployed_preference_accuracy", deployed)):
            if not version.adapter_path:
                metrics[key] = 0.5
                continue
            model, tokenizer = ev.load_policy_for_eval(hf_base, version.adapter_path)
            metrics[key] = ev.preference_accuracy(model, tokenizer, heldout_pairs)["preference_accuracy"]
            del model

    # Replies from the served artifacts (llama.cpp + exported GGUF adapter for a GGUF base).
    root = load_chat_model(
        config.model,
        chat_template=config.chat_template,
        n_ctx=config.n_ctx,
        n_threads=config.threads,
        pool_size=1,
    )
    try:
        loader = VersionLoader(root)
        models = {"base": loader.load(base_row)}
        models["candidate"] = loader.load(candidate)
        models["deployed"] = models["base"] if deployed.id == base_row.id else loader.load(deployed)
        prompts = gate_prompts(store, config)
        if prompts and reward_adapter:
            stages.within(f"sampling {len(prompts)} held-out prompts from candidate and deployed", 0.3)
            params = SamplingParams(temperature=0.7, max_new_tokens=config.gate.max_new_tokens, seed=1234)
            replies = {
                k: [models[k].generate(p, params).text for p in prompts] for k in ("candidate", "deployed")
            }
            from trainers.gate import win_rate
            from trainers.reward import RewardModel

            rm = RewardModel.load(reward_adapter, hf_base)
            scores = {k: rm.score(prompts, v) for k, v in replies.items()}
            metrics["win_rate"] = win_rate(scores["candidate"], scores["deployed"])
            metrics["reward_candidate"] = sum(scores["candidate"]) / len(prompts)
            metrics["reward_deployed"] = sum(scores["deployed"]) / len(prompts)
        stages.within("regression prompts (facts, refusals)", 0.7)
        greedy = SamplingParams(temperature=0.0, max_new_tokens=config.gate.max_new_tokens)

        system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []

        def answer(which: str, questions: Sequence[str]) -> list[str]:
            return [
                models[which].generate([*system, {"role": "user", "content": q}], greedy).text
                for q in questions
            ]

        facts = FACTS[: config.gate.facts]
        questions = [f.question for f in facts]
        metrics.update(regression_report(answer("base", questions), answer("candidate", questions), facts))
        harmful = HARMFUL_REQUESTS[: config.gate.refusals]
        metrics.update(refusal_report(answer("base", harmful), answer("candidate", harmful), harmful))
        for m in {id(v): v for v in models.values()}.values():
            if m is not root:
                m.close()
    finally:
        root.close()
    result = decide(metrics, config.gate)
    stages.within(("PASSED: " if result.passed else "FAILED: ") + "; ".join(result.reasons), 1.0)
    return result


def gate_prompts(store: FeedbackStore, config: CycleConfig) -> list[list[dict[str, str]]]:
    """Held-out prompts (stable split by prompt hash), newest first, at most ``gate.eval_prompts``."""
    from trainers.data import is_heldout

    seen, out = set(), []
    for p in reversed(ds.prompts(store)):
        if p.user_id in config.excluded_users:
            continue
        key = json.dumps(p.prompt)
        if key not in seen and is_heldout(p.prompt, 0.1):
            seen.add(key)
            out.append(p.prompt)
        if len(out) >= config.gate.eval_prompts:
            break
    if len(out) < config.gate.eval_prompts:  # few held-out prompts yet: top up with the newest others
        for p in reversed(ds.prompts(store)):
            key = json.dumps(p.prompt)
            if key not in seen and p.user_id not in config.excluded_users:
                seen.add(key)
                out.append(p.prompt)
            if len(out) >= config.gate.eval_prompts:
                break
    return out
