"""One training method, end to end: stored feedback -> dataset -> TRL -> adapter -> evaluation -> GGUF
export -> a candidate model version in the registry.

This is what ``python launch.py train --method ...`` runs and what a training cycle calls per stage.
It never touches a served model: it loads its own copy of the base, writes a new adapter directory
atomically, and registers it as a *candidate* (deploying is the evaluation gate's decision).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from feedback_store import datasets as ds
from feedback_store.store import FeedbackStore
from trainers import registry
from trainers.common import CommonConfig, TrainingDataError, TrainResult, read_metrics, write_metrics
from trainers.data import cap_per_user, dedupe, one_pair_per_vote, split_heldout, vote_count
from trainers.progress import training_progress

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage message, fraction done 0..1)


@dataclass
class TrainRequest:
    """What to train, on which data, from which served base."""

    method: str
    db_path: Path
    data_dir: Path
    model: str | None = None
    """The served base (GGUF file or HF directory); None = the embedded model."""
    since: str | None = None
    user_id: str | None = None
    version_id: int | None = None
    """Only feedback on replies written by this model version."""
    init_from: str = "base"
    """"base": a fresh LoRA, reference = base. "deployed": continue the deployed adapter, reference = it."""
    heldout_fraction: float = 0.1
    max_share_per_user: float = 0.25
    reward_adapter: str | None = None
    """Reward model for rl / best_of_n / evaluation; default: the latest one trained (data_dir/reward_models)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config fields to override (max_steps, learning_rate, threads, ...)."""
    eval_prompts: int = 8
    """Held-out prompts sampled for the KL and reward-score measurements (0 = skip them)."""
    eval_tokens: int = 48
    """Length of those samples (a cycle passes the gate's ``max_new_tokens``, whose KL guard reads them)."""
    register: bool = True
    training_run_id: int | None = None
    excluded_users: frozenset[str] = frozenset()
    """Users whose feedback is left out, besides those the hygiene rules exclude."""
    hygiene: bool = True
    """Leave out flagged text and the users ``feedback_store.hygiene.excluded_users`` names (rate-limited,
    repeatedly flagged, excluded by an operator), so one abusive user cannot steer training."""
    replay: str = "answers"
    """What the replay term replays when ``ptx_coef`` > 0 (``trainers.replay``): answers or text."""
    system_prompt: str | None = None
    """The users' system prompt: the replayed answers are asked under it, as users ask."""
    chat_template: str = "auto"
    reward_warm_start: bool = False
    """Reward model only: continue the latest reward model instead of a fresh score head."""
    reward_scores: bool = True
    """Score samples before and after with the reward model (the cycle's gate does that instead)."""
    ai_weight: float = 0.0
    """What a pair labelled by a model (RLAIF, ``trainers.ai_labels``) weighs against a person's vote;
    0 leaves such pairs out (the reward model never learns from its own labels)."""


@dataclass
class TrainOutcome:
    result: TrainResult
    version_id: int | None = None
    gguf_adapter: Path | None = None


def served_base(model: str | None) -> Path:
    if model is None:
        from models.embedded import embedded_model_path

        return embedded_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--model {model}: no such file or directory")
    return path


def hf_base_for(base: Path, data_dir: Path) -> Path:
    """The trainers' copy of the base: the GGUF dequantized once (cached), or the HF directory itself
    (a GPTQ one too: adapters then train on its 4-bit weights, as it is served)."""
    if base.is_dir():
        from models.hf_base import gptq_config_of

        if gptq_config_of(base) is not None:
            from models.gptq import prepare_environment

            prepare_environment()  # before transformers imports GPTQModel
        return base
    from models.hf_base import ensure_hf_base

    return ensure_hf_base(
        base, data_dir / "hf-base"
    )  # the same cache the server uses (Settings.hf_cache_dir)


def latest_reward_model(data_dir: Path) -> Path | None:
    pointer = data_dir / "reward_models" / "LATEST"
    if pointer.exists():
        path = Path(pointer.read_text().strip())
        if (path / "adapter_config.json").exists():
            return path
    return None


def _set_latest_reward_model(data_dir: Path, adapter_dir: Path) -> None:
    pointer = data_dir / "reward_models" / "LATEST"
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(str(adapter_dir.resolve()))
    tmp.replace(pointer)


def load_examples(store: FeedbackStore, req: TrainRequest) -> tuple[list, list]:
    """(train, held-out) examples for ``req.method``: filtered, deduplicated, capped per user (a ranking
    counts once), split by prompt; held-out pairs keep one pair per ranking or scored prompt."""
    filters = dict(since=req.since, user_id=req.user_id, exclude_flagged=req.hygiene)
    kind = registry.get(req.method).data
    if kind == "prompts":
        items = ds.prompts(store, **filters)
    else:
        read = {
            "pairs": ds.preference_pairs,
            "unpaired": ds.unpaired_feedback,
            "demonstrations": ds.demonstrations,
        }[kind]
        items = read(store, version_id=req.version_id, **filters)
    excluded = req.excluded_users | (store.hygiene.excluded_users() if req.hygiene else frozenset())
    items = [i for i in items if i.user_id not in excluded]
    if kind == "pairs":  # AI-labelled pairs: weighted, or left out
        items = [
            i if i.source != "ai" else replace(i, weight=i.weight * req.ai_weight)
            for i in items
            if i.source != "ai" or req.ai_weight > 0
        ]
    items = cap_per_user(dedupe(items), max_share=req.max_share_per_user)
    train, heldout = split_heldout(items, req.heldout_fraction)
    if kind == "pairs":  # measured on held-out pairs, a ranking is one vote, not C(K,2) of them
        heldout = one_pair_per_vote(heldout)
    return train, heldout


def _config_for(method: str, **kwargs: Any) -> CommonConfig:
    cls = registry.get(method).config_class()
    known = {f.name for f in fields(cls)}
    unknown = set(kwargs) - known
    if unknown:
        raise ValueError(f"{method} has no setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**kwargs)


def run_training(
    req: TrainRequest, progress: Progress | None = None, callbacks: Sequence | None = None
) -> TrainOutcome:
    """Train ``req.method`` and register the result; raises TrainingDataError when data is insufficient."""

    say = progress or (lambda message, fraction: log.info("%s (%.0f%%)", message, 100 * fraction))
    t0 = time.perf_counter()
    base = served_base(req.model)
    base_id = base.name
    store = FeedbackStore(req.db_path)
    try:
        versions = store.versions
        say("reading feedback", 0.02)
        train, heldout = load_examples(store, req)
        method = registry.get(req.method)
        # too little data is said before the base is prepared and loaded (a minute on two cores); the
        # trainer checks its own measure again (DPO counts votes, the reward model pairs)
        minimum = int(req.overrides.get("min_examples", method.min_examples))
        count = vote_count(train) if method.policy and method.data == "pairs" else len(train)
        if count < minimum:
            raise TrainingDataError(
                f"{count} training examples ({method.data}, after the held-out split); {req.method} needs "
                f"at least {minimum}. Collect more feedback first."
            )
        deployed = versions.deployed(base_id)
        say(f"{len(train)} training and {len(heldout)} held-out examples; preparing the base model", 0.05)
        hf_base = hf_base_for(base, req.data_dir)

        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = "adapters" if method.policy else "reward_models"
        output_dir = req.data_dir / folder / f"{req.method}-{stamp}-{req.training_run_id or 'manual'}"
        init_adapter = None
        if req.init_from == "deployed" and deployed is not None and deployed.adapter_path and method.policy:
            init_adapter = deployed.adapter_path
        reward_adapter = req.reward_adapter or (str(latest_reward_model(req.data_dir) or "") or None)
        kwargs: dict[str, Any] = dict(
            output_dir=str(output_dir), base_model_dir=str(hf_base), **req.overrides
        )
        if method.policy:
            kwargs.setdefault("init_adapter", init_adapter)
        elif req.reward_warm_start and (previous := latest_reward_model(req.data_dir)) is not None:
            kwargs.setdefault("init_adapter", str(previous))
            minimum = int(req.overrides.get("min_examples", method.min_examples))
            train = warm_start_pairs(train, read_metrics(previous).get("data_until"), minimum)
        if method.needs_reward_model:
            if reward_adapter is None:
                raise TrainingDataError(
                    f"{req.method} needs a trained reward model; run `python launch.py train --method reward` first."
                )
            kwargs["reward_adapter"] = reward_adapter
        config = _config_for(req.method, **kwargs)
        if method.policy and config.ptx_coef > 0 and not config.replay_file:
            say(f"preparing the replay set ({req.replay})", 0.07)
            config.replay_file = str(_replay_file(req, store, deployed or versions.ensure_base(base_id)))

        say(f"training {req.method}", 0.1)
        steps = training_progress(say, f"training {req.method}", 0.1, 0.85)
        result = _train(req.method, config, train, heldout, [*(callbacks or ()), steps])
        say("evaluating", 0.85)
        if not method.policy:
            # what the next warm start continues from: pairs up to here are in this model already
            result.metrics["data_until"] = max((x.created_at or "" for x in train), default=None)
            _set_latest_reward_model(req.data_dir, result.adapter_dir)
            result.metrics["wall_seconds"] = time.perf_counter() - t0
            write_metrics(result.adapter_dir, result.metrics)
            return TrainOutcome(result)

        result.metrics.update(
            evaluate_policy(
                hf_base, result.adapter_dir, heldout, reward_adapter, req.eval_prompts, store, req
            )
        )
        gguf_path = None
        if base.suffix == ".gguf":
            say("exporting the adapter for llama.cpp", 0.93)
            from models.lora_export import export_peft_lora_to_gguf

            gguf_path = result.adapter_dir / "adapter.gguf"
            t_export = time.perf_counter()
            export_peft_lora_to_gguf(result.adapter_dir, gguf_path, base_gguf=base)
            result.metrics["gguf_export_seconds"] = round(time.perf_counter() - t_export, 2)
        result.metrics["wall_seconds"] = time.perf_counter() - t0
        write_metrics(result.adapter_dir, result.metrics)
        version_id = None
        if req.register:
            version = versions.register_candidate(
                base_id,
                adapter_path=result.adapter_dir,
                gguf_adapter_path=gguf_path,
                parent_id=deployed.id if deployed else None,
                method=req.method,
                metrics=_registry_metrics(result.metrics),
                training_run_id=req.training_run_id,
            )
            version_id = version.id
        say(f"done: candidate version {version_id}" if version_id else "done", 1.0)
        return TrainOutcome(result, version_id, gguf_path)
    finally:
        store.close()


def warm_start_pairs(pairs: Sequence, data_until: str | None, minimum: int = 0) -> list:
    """What a warm-started reward model trains on: the pairs newer than those the previous one saw, and
    as many older ones spread over the rest (so that it does not forget them), instead of everything
    again; older ones fill up to ``minimum`` (the method's), so a few new votes still train. All of them
    when the previous model did not record where it stopped."""
    from trainers.gate import spread_sample

    if not data_until:
        return list(pairs)
    new = [p for p in pairs if (p.created_at or "") > data_until]
    old = [p for p in pairs if (p.created_at or "") <= data_until]
    return new + spread_sample(old, max(len(new), minimum - len(new)))


def _replay_file(req: TrainRequest, store: FeedbackStore, version) -> Path:
    from trainers import replay

    demos = []
    if req.replay == "answers":  # the users' better answers are replayed with the pool's
        excluded = req.excluded_users | (store.hygiene.excluded_users() if req.hygiene else frozenset())
        demos = [
            d for d in ds.demonstrations(store, exclude_flagged=req.hygiene) if d.user_id not in excluded
        ]
    return replay.prepare(
        req.replay,  # type: ignore[arg-type]
        req.data_dir,
        version=version,
        model=req.model,
        chat_template=req.chat_template,
        system_prompt=req.system_prompt,
        threads=req.overrides.get("threads"),
        demonstrations=demos,
    )


def _train(
    method: str, config: CommonConfig, train: list, heldout: list, callbacks: Sequence | None
) -> TrainResult:
    entry = registry.get(method)
    extra = {"heldout": heldout} if entry.takes_heldout else {}
    return entry.train_function()(config, train, callbacks=list(callbacks or []), **extra)


def evaluate_policy(
    hf_base: Path,
    adapter_dir: Path,
    heldout: Sequence,
    reward_adapter: str | None,
    n_prompts: int,
    store: FeedbackStore,
    req: TrainRequest,
) -> dict[str, Any]:
    """KL to the base on held-out prompts, reward-model score before/after, held-out preference accuracy."""
    from trainers import evaluate as ev

    metrics: dict[str, Any] = {}
    model, tokenizer = ev.load_policy_for_eval(hf_base, adapter_dir)
    pairs = [x for x in heldout if hasattr(x, "chosen")]
    if pairs:
        metrics.update(
            {f"heldout_{k}": v for k, v in ev.preference_accuracy(model, tokenizer, pairs).items()}
        )
    if n_prompts <= 0:
        return metrics
    prompt_pool = [x.prompt for x in heldout] or [p.prompt for p in ds.prompts(store)[-n_prompts:]]
    prompts = prompt_pool[:n_prompts]
    if not prompts:
        return metrics
    after = [
        s[0]
        for s in ev.sample(
            model, tokenizer, prompts, n=1, max_new_tokens=req.eval_tokens, temperature=1.0, seed=1
        )
    ]
    kl = ev.kl_per_sample(model, tokenizer, prompts, after)
    metrics["kl_to_base"] = sum(kl) / len(kl)
    metrics["kl_per_prompt"] = kl
    if reward_adapter and req.reward_scores:
        from trainers.reward import RewardModel

        with ev.reference_of(model) as base_model:
            before = [
                s[0]
                for s in ev.sample(
                    base_model, tokenizer, prompts, n=1, max_new_tokens=req.eval_tokens, seed=1
                )
            ]
        del model
        rm = RewardModel.load(reward_adapter, hf_base)
        metrics["reward_before"] = sum(rm.score(prompts, before)) / len(prompts)
        metrics["reward_after"] = sum(rm.score(prompts, after)) / len(prompts)
    return metrics


def _registry_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics worth showing next to a version (curves stay in the adapter's metrics.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
