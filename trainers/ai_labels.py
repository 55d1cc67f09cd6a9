"""Pairs without human labels (RLAIF, online DPO with the reward model as the judge).

Most chats get no feedback. For up to ``ai_pairs`` of the users' Chat-tab questions that got none, a
cycle samples two replies from the deployed version (the served artifact, seeds s and s+1), lets the
reward model it has just trained score both, and stores the better-scored one as chosen: a comparison
in mode "ai" by the user "ai:reward-model", with both scores, in a conversation of source "ai" owned
by the user who asked (so that deleting their data deletes it). The policy update then mixes these
pairs in with a weight (``--train-ai-weight``; DPO includes each in an epoch with that probability);
the reward model never trains on them (they are its own labels), the Dashboard and the scheduler's
count of new feedback leave them out, and exports mark them with their source "ai" and labeller.

Held-out prompts (the gate's) are never labelled, so the gate does not measure what was trained.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedback_store import datasets as ds
from feedback_store.records import AssistantTurn
from feedback_store.store import FeedbackStore
from trainers.data import is_heldout
from trainers.run import hf_base_for

if TYPE_CHECKING:
    from trainers.cycle import CycleConfig

AI_USER = "ai:reward-model"
JUDGE_USER = "ai:judge"
SEED = 4321
HELDOUT_FRACTION = 0.1  # the split the trainers and the gate use (TrainRequest.heldout_fraction)


def label_pairs(
    config: CycleConfig,
    store: FeedbackStore,
    base: Path,
    deployed,
    reward_adapter: Path | None,
    threads: int | None = None,
    progress=lambda message, fraction: None,
) -> dict[str, Any]:
    """Label up to ``config.ai_pairs`` pairs; returns what was done (for the run's metrics)."""
    from models.base import SamplingParams
    from models.loader import load_chat_model
    from models.versions import VersionLoader
    from trainers.reward import RewardModel

    records = [
        r
        for r in ds.unrated_prompts(store, limit=4 * config.ai_pairs, excluded_users=config.excluded_users)
        if not is_heldout(r.prompt, HELDOUT_FRACTION)
    ][: config.ai_pairs]
    if not records:
        return {"ai_prompts": 0, "ai_pairs": 0}
    progress(f"sampling 2 replies to {len(records)} unrated prompts from v{deployed.id}", 0.1)
    params = SamplingParams(temperature=0.7, max_new_tokens=config.gate.max_new_tokens)
    root = load_chat_model(
        config.model, chat_template=config.chat_template, n_ctx=config.n_ctx, n_threads=threads, pool_size=1
    )
    try:
        model = VersionLoader(root).load(deployed)
        try:
            replies = [
                [model.generate(r.prompt, replace(params, seed=SEED + 2 * i + j)) for j in (0, 1)]
                for i, r in enumerate(records)
            ]
        finally:
            if model is not root:
                model.close()
    finally:
        root.close()
    if config.ai_judge:
        return _judge_pairs(config, store, records, replies, deployed.id, progress)
    progress("scoring them with the reward model", 0.6)
    rm = RewardModel.load(reward_adapter, hf_base_for(base, config.data_dir))
    scores = rm.score([r.prompt for r in records for _ in (0, 1)], [x.text for pair in replies for x in pair])
    del rm
    stored = 0
    for i, (record, pair) in enumerate(zip(records, replies, strict=True)):
        a, b = scores[2 * i], scores[2 * i + 1]
        if a == b or _same(pair):
            continue  # nothing to learn from
        label = {
            "labeler": "reward-model",
            "reward_model": str(reward_adapter),
            "scores": [round(float(a), 4), round(float(b), 4)],
        }
        store_pair(store, record, pair, 0 if a > b else 1, deployed.id, label, AI_USER)
        stored += 1
    return {"ai_prompts": len(records), "ai_pairs": stored}


def _same(pair) -> bool:
    return pair[0].text.strip() == pair[1].text.strip()


def _judge_pairs(config: CycleConfig, store, records, replies, version_id: int, progress) -> dict[str, Any]:
    """Label the pairs with the OpenAI-compatible judge (both orders; kept when the verdicts agree)."""
    from models.base import GenerationError, ModelLoadError
    from trainers.ai_judge import Judge, read_constitution

    constitution = read_constitution(Path(config.ai_constitution) if config.ai_constitution else None)
    outcomes = {"agreed": 0, "disagreed": 0, "unparsed": 0}
    try:
        judge = Judge(
            config.ai_judge,
            model=config.ai_judge_model,
            api_key=config.ai_judge_api_key,
            constitution=constitution,
        )
    except ModelLoadError as exc:  # the users' labels still train: the cycle goes on without AI pairs
        progress(f"no AI pairs: {exc}", 1.0)
        return {"ai_prompts": len(records), "ai_pairs": 0, "ai_judge_error": str(exc)[:500]}
    try:
        for i, (record, pair) in enumerate(zip(records, replies, strict=True)):
            progress(f"the judge {judge.name}: pair {i + 1} of {len(records)}", 0.6 + 0.4 * i / len(records))
            if _same(pair):
                continue
            try:
                verdict = judge.judge(record.prompt[-1]["content"], pair[0].text, pair[1].text)
            except GenerationError as exc:  # the pairs labelled so far stay; the rest wait for a later cycle
                progress(f"the judge stopped answering: {exc}", 1.0)
                outcomes["error"] = str(exc)[:500]
                break
            outcomes[verdict.why] += 1
            if verdict.better is not None:
                label = {
                    "labeler": "judge",
                    "judge": judge.name,
                    "constitution": judge.constitution_id,
                    "reasons": list(verdict.reasons),
                }
                store_pair(store, record, pair, verdict.better, version_id, label, JUDGE_USER)
    finally:
        judge.close()
    return {
        "ai_prompts": len(records),
        "ai_pairs": outcomes["agreed"],
        "ai_judge_disagreed": outcomes["disagreed"],
        "ai_judge_unparsed": outcomes["unparsed"],
        **({"ai_judge_error": outcomes["error"]} if "error" in outcomes else {}),
    }


def store_pair(
    store: FeedbackStore, record, results, better: int, version_id: int, label: dict[str, Any], labeller: str
) -> int:
    """Store one AI-labelled pair (``better``: 0 or 1, which of ``results`` won; ``label``: how it was
    decided, kept with the comparison); returns the comparison's id."""
    system = next((m["content"] for m in record.prompt if m["role"] == "system"), None)
    question = record.prompt[-1]["content"]
    conv = store.create_conversation(record.user_id, source="ai", system_prompt=system)
    asked = store.add_message(conv, "user", question)
    ids = [
        store.add_assistant_message(
            conv,
            asked,
            AssistantTurn(
                content=r.text,
                model_version_id=version_id,
                params=asdict(r.params),
                prompt=r.prompt,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                finish_reason=r.finish_reason,
            ),
        )
        for r in results
    ]
    comparison = store.feedback.record_comparison(
        ids[0],
        ids[1],
        labeller,
        "a" if better == 0 else "b",
        mode=ds.AI_MODE,
        label_a=f"v{version_id} sample 1",
        label_b=f"v{version_id} sample 2",
        anonymous=False,
        differed={**label, "prompt_message_id": record.message_id},
    )
    return comparison.id
