"""One training cycle of iterative deployment: its configuration and its orchestration.

Stages: export the feedback -> train or refresh the reward model -> update the policy (the configured
method, or ``trainers.registry.choose_method`` for "auto") -> evaluate the candidate against the deployed
version through the evaluation gate (``trainers.gate_eval``) -> register it -> deploy it when the gate
says deploy and auto-deploy is on (otherwise it waits for a human click), reject it when the gate
rejects it, or leave it a candidate when the gate is undecided (it needs more evidence). Each stage's
progress, timing and messages go to the ``training_runs`` row; the decision, its reasons and the
gate's intervals too.

The speed levers are on by default (docs/training.md, Speed): LoRA on the upper
layers only, the reward model continued from the previous cycle's, bf16 where the CPU has AMX, and all
cores while the server is idle (``trainers.threads``).

Crash safety: the deployed version changes only in the final registry transaction. A cycle killed,
crashing, hitting a NaN loss or a full disk before that leaves the deployed version serving; the run
row is then marked failed (or killed, by the scheduler). Nothing runs in the web process: the
scheduler starts ``trainers.worker`` as a low-priority subprocess; ``launch.py train --cycle`` runs the
same thing in the foreground.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedback_store import datasets as ds
from feedback_store.store import FeedbackStore
from settings import CanarySettings, TrainingSettings
from trainers import registry
from trainers.ai_judge import KEY_ENV as JUDGE_KEY_ENV
from trainers.common import TrainingDataError, same_named
from trainers.data import vote_count
from trainers.gate import GateConfig
from trainers.progress import ProgressCallback, Stages
from trainers.run import TrainRequest, latest_reward_model, run_training, served_base
from trainers.threads import ThreadBudget
from trainers.threads import callback as thread_callback

if TYPE_CHECKING:
    from settings import Settings

_DEFAULT = {name: info.default for name, info in TrainingSettings.model_fields.items()}
BF16 = {"auto": None, "on": True, "off": False}


@dataclass
class CycleConfig:
    """What one cycle does; the scheduler writes it as JSON for the child process (``to_dict``)."""

    db_path: Path
    data_dir: Path
    model: str | None = None
    method: str = registry.AUTO
    """"auto" (``registry.choose_method``) or a policy method of the registry."""
    auto_deploy: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    canary: CanarySettings = field(default_factory=CanarySettings)
    """Canary battles after the offline gate (``feedback_store.canary``); share 0: off."""
    reward_overrides: dict[str, Any] = field(default_factory=dict)
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    threads: int | None = 1
    """torch threads for training: 1 leaves the other core to the chat server on a 2-core machine."""
    init_from: str = "base"
    excluded_users: frozenset[str] = frozenset()
    """Users left out besides those the hygiene rules exclude (``feedback_store.hygiene``)."""
    hygiene: bool = True
    """Leave out flagged text and rate-limited / repeatedly flagged / operator-excluded users."""
    min_pairs: int | None = None
    """Override of DPO's minimum of preference pairs (None: the method's own)."""
    min_unpaired: int | None = None
    """Override of KTO's minimum of thumbs (None: the method's own)."""
    n_ctx: int = 2048
    chat_template: str = "auto"
    system_prompt: str | None = None
    """The system prompt users chat under (the server's default): the gate asks its regression prompts
    with it, as users ask them. A small model's greedy answer without it is fragile."""
    idle_threads: int | None = _DEFAULT["idle_threads"]
    """Threads while the server is idle (the scheduler signals it); None: all cores."""
    ptx_coef: float = _DEFAULT["ptx_coef"]
    replay: str = _DEFAULT["replay"]
    lora_layers: float = _DEFAULT["lora_layers"]
    bf16: str = _DEFAULT["bf16"]
    reward_warm_start: bool = _DEFAULT["reward_warm_start"]
    dpo_loss: str = _DEFAULT["dpo_loss"]
    label_smoothing: float = _DEFAULT["label_smoothing"]
    ai_pairs: int = _DEFAULT["ai_pairs"]
    ai_weight: float = _DEFAULT["ai_weight"]
    ai_judge: str | None = _DEFAULT["ai_judge"]
    ai_judge_model: str | None = _DEFAULT["ai_judge_model"]
    ai_constitution: str | None = None
    # never serialised: to_dict leaves it out, from_dict reads it from ai_judge.KEY_ENV, which the
    # scheduler sets in the training process's environment
    ai_judge_api_key: str | None = field(default=None, repr=False)
    """The defaults of these are the settings' (``TrainingSettings``): one place for both."""

    @classmethod
    def from_settings(cls, settings: Settings, excluded_users: frozenset[str] = frozenset()) -> CycleConfig:
        """The cycle the server's scheduler and ``launch.py train --cycle`` run (one place for both)."""
        t = settings.training
        steps = {"max_steps": t.max_steps} if t.max_steps else {}
        return cls(
            db_path=settings.db_path,
            data_dir=settings.data_dir,
            model=settings.model,
            method=registry.check_policy_method(t.method),
            auto_deploy=t.auto_deploy,
            threads=t.threads,
            chat_template=settings.inference.chat_template,
            excluded_users=excluded_users,
            hygiene=t.hygiene,
            reward_overrides=dict(steps),
            policy_overrides=dict(steps),
            gate=settings.gate.model_copy(),
            canary=settings.canary.model_copy(),
            system_prompt=settings.server.system_prompt or None,
            idle_threads=t.idle_threads,
            ptx_coef=t.ptx_coef,
            replay=t.replay,
            lora_layers=t.lora_layers,
            bf16=t.bf16,
            reward_warm_start=t.reward_warm_start,
            dpo_loss=t.dpo_loss,
            label_smoothing=t.label_smoothing,
            ai_pairs=t.ai_pairs,
            ai_weight=t.ai_weight,
            ai_judge=t.ai_judge,
            ai_judge_model=t.ai_judge_model,
            ai_constitution=str(t.ai_constitution) if t.ai_constitution else None,
            ai_judge_api_key=t.ai_judge_api_key,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ai_judge_api_key"}
        d.update(
            db_path=str(self.db_path),
            data_dir=str(self.data_dir),
            excluded_users=sorted(self.excluded_users),
            gate=self.gate.model_dump(),
            canary=self.canary.model_dump(),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CycleConfig:
        d = dict(d)
        d["db_path"], d["data_dir"] = Path(d["db_path"]), Path(d["data_dir"])
        d["gate"] = GateConfig(**d.get("gate", {}))
        d["canary"] = CanarySettings(**d.get("canary", {}))
        d["excluded_users"] = frozenset(d.get("excluded_users", ()))
        d.setdefault("ai_judge_api_key", os.environ.get(JUDGE_KEY_ENV))
        return cls(**d)


def dpo_options(method: str, loss: str, label_smoothing: float) -> dict[str, Any]:
    """``--dpo-loss`` and ``--label-smoothing`` as DPO's trainer options (other methods have neither)."""
    return {"loss_type": loss, "label_smoothing": label_smoothing} if method == "dpo" else {}


@dataclass
class CycleOutcome:
    decision: str
    reasons: list[str]
    candidate_version_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def start_canary(
    store: FeedbackStore,
    config: CycleConfig,
    candidate_id: int,
    deployed_id: int,
    gate_decision: str,
    run_id: int | None,
):
    """Put the candidate on canary (a live canary of an older candidate is superseded); the offline
    gate's decision is what stands if the votes do not decide within the budget."""
    live = store.canaries.live()
    if live is not None:
        store.canaries.end(live, "cancelled", [f"superseded by candidate v{candidate_id}"])
    c = config.canary
    return store.canaries.start(
        candidate_id,
        deployed_id,
        share=c.share,
        max_votes=c.votes,
        hours=c.hours,
        per_user=c.per_user,
        alpha=1 - config.gate.confidence,
        fallback=gate_decision,
        auto_deploy=config.auto_deploy,
        training_run_id=run_id,
    )


def check_finite(metrics: dict[str, Any], what: str) -> None:
    """A NaN or infinite loss means the adapter is garbage: fail the cycle rather than evaluate it."""
    losses = [p.get("loss") for p in metrics.get("loss_curve", [])]
    if any(v is not None and not math.isfinite(v) for v in losses):
        raise FloatingPointError(f"{what} training diverged (non-finite loss); the candidate is discarded")


def run_cycle(
    config: CycleConfig,
    run_id: int | None = None,
    on_progress: ProgressCallback | None = None,
    threads: ThreadBudget | None = None,
) -> CycleOutcome:
    """One whole cycle; reports into the ``training_runs`` row ``run_id`` (if any) and ``on_progress``.
    ``threads`` (the worker's, changed by the scheduler's signals) sets the CPU threads as it goes."""
    store = FeedbackStore(config.db_path)
    runs = store.runs if run_id is not None else None
    stages = Stages(runs, run_id, on_progress)
    try:
        return _run(
            config, store, runs, run_id, stages, threads or ThreadBudget(config.threads or 1, config.threads)
        )
    finally:
        stages.end()
        store.close()


def _run(
    config: CycleConfig, store: FeedbackStore, runs, run_id, stages: Stages, threads: ThreadBudget
) -> CycleOutcome:
    versions = store.versions
    base = served_base(config.model)
    base_id = base.name
    base_row = store.versions.ensure_base(base_id)
    deployed = versions.deployed(base_id) or base_row
    if config.hygiene:  # who is excluded is decided now, from the store, not when the server started
        config = replace(config, excluded_users=config.excluded_users | store.hygiene.excluded_users())
    req = {
        "training_run_id": run_id,
        **same_named(config, "db_path", "data_dir", "model", "init_from", "excluded_users", "hygiene"),
    }
    speed = {"lora_layers": config.lora_layers, "bf16": BF16[config.bf16]}
    callbacks = [thread_callback(threads)]

    # 1. export: what there is to learn from, saved next to the run for inspection and reproduction.
    stages.begin("export", "reading the feedback")
    clean = {"exclude_flagged": config.hygiene}
    pairs = [p for p in ds.preference_pairs(store, **clean) if p.user_id not in config.excluded_users]
    unpaired = [u for u in ds.unpaired_feedback(store, **clean) if u.user_id not in config.excluded_users]
    demos = [d for d in ds.demonstrations(store, **clean) if d.user_id not in config.excluded_users]
    n_good = sum(1 for u in unpaired if u.label)
    human = [p for p in pairs if p.source != "ai"]
    counts = {
        "pairs": len(human),
        "votes": vote_count(human),  # a ranking's pairs are one vote: DPO's data is one pair per vote
        "ai_pairs": len(pairs) - len(human),
        "thumbs_up": n_good,
        "thumbs_down": len(unpaired) - n_good,
        "demonstrations": len(demos),
    }
    run_dir = config.data_dir / "runs" / f"run-{run_id or 'manual'}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, items in (("preferences", pairs), ("kto", unpaired), ("sft", demos)):
        with (run_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item.to_trl(), ensure_ascii=False) + "\n")
    method = (
        config.method
        if config.method != "auto"
        else registry.choose_method(
            counts["votes"], n_good, len(unpaired) - n_good, len(demos), config.min_pairs, config.min_unpaired
        )
    )
    stages.within(f"{counts}; policy method: {method or 'none'}", 1.0)
    if runs:
        runs.update(run_id, metrics={"data": counts, "method": method})
    min_pairs = registry.get("dpo").min_examples if config.min_pairs is None else config.min_pairs
    if method is None:
        min_unpaired = (
            registry.get("kto").min_examples if config.min_unpaired is None else config.min_unpaired
        )
        raise TrainingDataError(
            f"not enough feedback to train: {counts['votes']} preference votes (need {min_pairs}), "
            f"{len(unpaired)} thumbs (need {min_unpaired} with both kinds), {len(demos)} demonstrations "
            f"(need {registry.get('sft').min_examples})"
        )

    # 2. reward model: refreshed whenever there are enough pairs, else the latest one is reused.
    stages.begin("reward", "training the reward model")
    reward_metrics: dict[str, Any] = {}
    reward_adapter = latest_reward_model(config.data_dir)
    if len(human) >= min_pairs:
        try:
            outcome = run_training(
                TrainRequest(
                    method="reward",
                    overrides={**speed, "threads": threads.apply(), **config.reward_overrides},
                    reward_warm_start=config.reward_warm_start,
                    **req,
                ),
                progress=lambda m, f: stages.within(m, f),
                callbacks=callbacks,
            )
        except TrainingDataError as exc:
            if reward_adapter is None:
                raise
            # a warm start with few pairs newer than the previous reward model: that one still holds
            stages.within(f"{exc} Keeping reward model {reward_adapter}", 1.0)
        else:
            check_finite(outcome.result.metrics, "reward model")
            reward_adapter = outcome.result.adapter_dir
            reward_metrics = {k: v for k, v in outcome.result.metrics.items() if k.startswith("heldout_")}
    else:
        stages.within(f"only {len(pairs)} pairs: keeping reward model {reward_adapter}", 1.0)
    labeller = config.ai_judge or reward_adapter  # a judge needs no reward model
    if config.ai_pairs > 0 and labeller is not None and registry.get(method).data == "pairs":
        from trainers.ai_labels import label_pairs  # loads models: only when asked for

        labelled = label_pairs(
            config, store, base, deployed, reward_adapter, threads.apply(), lambda m, f: stages.within(m, f)
        )
        for key in labelled.keys() - {"ai_prompts", "ai_judge_error"}:  # the pairs, the judge's undecided
            counts[key] = counts.get(key, 0) + labelled[key]
        if "ai_judge_error" in labelled:
            counts["ai_judge_error"] = labelled["ai_judge_error"]
        stages.within(f"{labelled['ai_pairs']} new AI-labelled pairs ({counts['ai_pairs']} in all)", 1.0)
        if runs:
            runs.update(run_id, metrics={"data": counts, "method": method})

    # 3. policy update -> candidate version (adapter + GGUF export for llama.cpp).
    stages.begin("policy", f"training the policy with {method}")
    policy = run_training(
        TrainRequest(
            method=method,
            reward_adapter=str(reward_adapter) if reward_adapter else None,
            overrides={
                **speed,
                "ptx_coef": config.ptx_coef,
                "threads": threads.apply(),
                **dpo_options(method, config.dpo_loss, config.label_smoothing),
                **config.policy_overrides,
            },
            ai_weight=config.ai_weight if config.ai_pairs > 0 else 0.0,
            eval_prompts=config.gate.kl_prompts,
            eval_tokens=config.gate.max_new_tokens,
            **same_named(config, "replay", "system_prompt", "chat_template"),
            reward_scores=False,  # the gate scores the served artifact's replies instead
            **req,
        ),
        progress=lambda m, f: stages.within(m, f),
        callbacks=callbacks,
    )
    check_finite(policy.result.metrics, method)
    candidate = versions.get(policy.version_id)
    if runs:
        runs.update(run_id, candidate_version_id=candidate.id)

    # 4. the gate: candidate vs deployed on held-out data, through the artifact that would be served.
    stages.begin("evaluate", f"evaluating candidate v{candidate.id} against deployed v{deployed.id}")
    from trainers.gate_eval import evaluate_candidate  # loads models: only when there is a candidate

    gate = evaluate_candidate(
        config,
        store,
        base,
        candidate,
        deployed,
        base_row,
        policy.result.metrics,
        reward_adapter,
        stages,
        threads=threads.apply(),
    )
    metrics = {**reward_metrics, **gate.metrics, "method": method, "data": counts}
    versions.update_metrics(
        candidate.id,
        {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))} | {"gate": gate.decision},
    )
    # the evidence behind the decision for the run row and the Training tab (per-item values included,
    # so that anyone can recompute the intervals)
    metrics["gate_checks"] = [asdict(c) for c in gate.checks]

    # 5. decide: the only step that changes what is served, one registry transaction.
    stages.begin("deploy", "applying the gate's decision")
    events = store.runs
    if gate.decision == "reject":
        versions.set_status(candidate.id, "rejected", notes="; ".join(gate.reasons))
        events.record_event(candidate.id, "reject", "gate", gate.reasons, run_id)
        decision = "rejected"
    elif config.canary.share > 0 and (gate.decision == "deploy" or config.canary.undecided):
        # the users decide: a share of anonymous battles pit the candidate against the deployed version
        canary = start_canary(store, config, candidate.id, deployed.id, gate.decision, run_id)
        gate.reasons.append(f"on canary {canary.id}: {canary.rule()}")
        decision = "canary"
    elif gate.decision == "undecided":  # stays a candidate: neither served nor written off
        decision = "undecided"
    elif config.auto_deploy:
        versions.deploy(candidate.id)
        events.record_event(candidate.id, "deploy", "gate", gate.reasons, run_id)
        decision = "deployed"
    else:
        decision = "awaiting_approval"
    stages.within(f"decision: {decision}", 1.0)
    return CycleOutcome(decision, gate.reasons, candidate.id, metrics, stages.end())
