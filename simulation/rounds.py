"""Rounds of iterative deployment with simulated users, through the real product:

    round 0: measure the base version on held-out prompts;
    round r: simulated users chat with the deployed version and give feedback (on-policy) ->
             the scheduler runs one training cycle (``python -m trainers.worker`` in a child process:
             export -> reward model -> policy -> gate -> deploy or reject) -> the service swaps to
             what the registry says is deployed -> measure the candidate (and so the deployed version).

Everything lives in its own work directory (database, adapters, reward models, run logs): the user's
own database is never touched. ``hf-base`` there links to a shared cache of the dequantized base.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulation.labelers import BradleyTerryLabeler, LabelStats
from simulation.measure import Evaluator, Measurement
from simulation.oracles import make_oracle
from simulation.tasks import capability_tasks, prompt_set
from simulation.users import EventMix, RoundFeedback, SimulatedUsers
from trainers.gate import GateConfig

Log = Callable[[str], None]
DEFAULT_SYSTEM_PROMPT = "You are a knowledgeable assistant. Give short, correct answers."  # the Chat tab's


@dataclass
class LoopConfig:
    work_dir: Path
    hf_cache: Path
    """Shared cache of the dequantized base (the server's DATA_DIR/hf-base); linked as work_dir/hf-base."""
    oracle: str = "vader"
    method: str = "dpo"
    rounds: int = 3
    feedback_per_round: int = 200
    unrated_per_round: int = 0
    """Chats per round that get no feedback (for ``ai_pairs`` in ``cycle_overrides``: RLAIF)."""
    mix: EventMix = field(default_factory=EventMix)
    max_new_tokens: int = 40
    temperature: float = 0.7
    bt_scale: float = 4.0
    n_users: int = 8
    samples_per_prompt: int = 2
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    init_from: str = "deployed"
    threads: int = 2
    seed: int = 0
    reward_overrides: dict[str, Any] = field(default_factory=dict)
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    gate_overrides: dict[str, Any] = field(default_factory=dict)
    """What ``gate`` changes from the product's default gate (shown with the figures)."""
    cycle_overrides: dict[str, Any] = field(default_factory=dict)
    """Training levers changed from the product's defaults (``ptx_coef``, ``lora_layers``): shown too."""
    canary_overrides: dict[str, Any] = field(default_factory=dict)
    """Canary settings changed from the product's (``share`` > 0 turns canary battles on): shown too."""
    heldout_limit: int | None = None
    """Measure on at most this many held-out prompts (quick runs and tests)."""
    capability_limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["work_dir"], d["hf_cache"] = str(self.work_dir), str(self.hf_cache)
        d["gate"] = self.gate.model_dump()
        return d


@dataclass
class RoundRecord:
    round: int
    feedback: dict[str, Any]
    run_id: int | None
    status: str
    decision: str | None
    reasons: list[str]
    candidate_version_id: int | None
    deployed_version_id: int
    stage_seconds: dict[str, float]
    candidate: dict[str, Any] | None
    deployed: dict[str, Any]
    seconds: dict[str, float]
    elapsed_minutes: float
    canary: dict[str, Any] | None = None
    """The simulated users' canary battles on the candidate (votes, decision, the gold verdict)."""


def method_label(
    method: str, cycle_overrides: dict[str, Any], policy_overrides: dict[str, Any] | None = None
) -> str:
    """The name a run's results and plot line go under: the method, then what this run changed of how the
    model is trained, so a variant does not replace the method's own result: DPO's loss when it is not
    the default (``dpo-ipo``), then ``beta0.05``, ``ptx0`` (the replay term's weight) and ``layers1``
    (the LoRA's share of the blocks) when given (``dpo-beta0.05``, ``kto-ptx0``, ``dpo-layers1-ptx1``)."""
    parts = [method]
    loss = cycle_overrides.get("dpo_loss")
    if method == "dpo" and loss and loss != "sigmoid":
        parts.append(loss)
    for key, tag, given in (
        ("beta", "beta", policy_overrides or {}),
        ("lora_layers", "layers", cycle_overrides),
        ("ptx_coef", "ptx", cycle_overrides),
    ):
        if given.get(key) is not None:
            parts.append(f"{tag}{given[key]:g}")
    return "-".join(parts)


def feedback_summary(fb: RoundFeedback, before: LabelStats, after: LabelStats) -> dict[str, Any]:
    """One round's feedback, with the labelers' agreement with gold over that round only."""
    votes = after.votes - before.votes
    pairs = votes + after.ranking_pairs - before.ranking_pairs
    agreeing = (
        after.votes_agreeing
        - before.votes_agreeing
        + after.ranking_pairs_agreeing
        - before.ranking_pairs_agreeing
    )
    thumbs = after.thumbs - before.thumbs
    return {
        "events": dict(fb.events),
        "total_events": sum(fb.events.values()),
        "replies": fb.replies,
        "tokens": fb.tokens,
        "unrated_chats": fb.unrated,
        "gold_seen": fb.gold_mean,
        "pair_agreement": agreeing / pairs if pairs else None,
        "thumbs_up_rate": (after.thumbs_up - before.thumbs_up) / thumbs if thumbs else None,
        "seconds": round(fb.seconds, 1),
    }


def summary(
    base: Measurement, final: Measurement, minutes: float, loop_minutes: float | None = None
) -> dict[str, Any]:
    """The headline figures, on the last line; ``loop_minutes`` is the rounds themselves
    (users' feedback and training cycles) without the benchmark's own measurements."""
    return {
        "gold_base": round(base.gold, 4),
        "gold_final": round(final.gold, 4),
        "win_rate_final": round(final.win_rate, 4),
        "kl_final": round(final.kl, 4),
        "capability_base": round(100 * base.capability, 1),
        "capability_final": round(100 * final.capability, 1),
        "minutes": round(minutes, 2),
        "loop_minutes": None if loop_minutes is None else round(loop_minutes, 2),
    }


def canary_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Across the rounds with canary battles: how many, the votes each needed, and how often the users'
    decision agreed with the gold preference on the same battles (deployed and gold above half, or
    rejected and gold below half; a budget fallback agrees with nothing)."""
    phases = [r["canary"] for r in records if r.get("canary")]
    if not phases:
        return None
    decided = [c for c in phases if c["by"] == "votes"]
    agree = [
        c
        for c in decided
        if c["gold_rate"] is not None
        and ((c["decision"] in ("deployed", "awaiting_approval")) == (c["gold_rate"] > 0.5))
    ]
    return {
        "rounds": len(phases),
        "decided_by_votes": len(decided),
        "votes": [c["battles"] for c in phases],
        "decisions": [c["decision"] for c in phases],
        "agreement_with_gold": f"{len(agree)}/{len(decided)}" if decided else None,
    }


def _link_hf_base(config: LoopConfig) -> None:
    from models.embedded import embedded_model_path
    from models.hf_base import ensure_hf_base

    ensure_hf_base(embedded_model_path(), config.hf_cache)  # made once (about 20 s), then reused
    link = config.work_dir / "hf-base"
    if not link.exists():
        link.symlink_to(config.hf_cache.resolve(), target_is_directory=True)


def run_loop(config: LoopConfig, log: Log = print) -> dict[str, Any]:
    """Run the rounds; returns the result (also written to work_dir/result.json)."""
    from feedback_store.store import FeedbackStore
    from models.base import SamplingParams
    from models.embedded import embedded_model_path
    from models.llamacpp import LlamaCppChatModel
    from models.service import ModelService
    from models.versions import VersionLoader
    from settings import CanarySettings, TrainingSettings
    from trainers.cycle import CycleConfig
    from trainers.run import hf_base_for, latest_reward_model
    from trainers.scheduler import TrainingScheduler

    t_start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - t_start) / 60

    config.work_dir.mkdir(parents=True, exist_ok=True)
    _link_hf_base(config)
    oracle = make_oracle(config.oracle)
    prompts = prompt_set(oracle.prompt_set)
    heldout = prompts.heldout[: config.heldout_limit] if config.heldout_limit else prompts.heldout
    capability = (
        capability_tasks()[: config.capability_limit] if config.capability_limit else capability_tasks()
    )
    cycle = CycleConfig(
        db_path=config.work_dir / "playground.db",
        data_dir=config.work_dir,
        method=config.method,
        auto_deploy=True,
        gate=config.gate,
        system_prompt=config.system_prompt,
        reward_overrides=dict(config.reward_overrides),
        policy_overrides=dict(config.policy_overrides),
        threads=config.threads,
        init_from=config.init_from,
        canary=CanarySettings(**config.canary_overrides),
        **config.cycle_overrides,
    )
    (config.work_dir / "loop_config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
    store = FeedbackStore(cycle.db_path)
    root = LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=config.threads)
    base = store.versions.ensure_base(root.model_id, name=f"{root.display_name} (base)")
    service = ModelService.from_registry(VersionLoader(root), store.versions, base_version_id=base.id)
    scheduler = TrainingScheduler(
        TrainingSettings(every=0, threads=config.threads, nice=0, min_feedback=0),  # never on a timer
        cycle,
    )
    params = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    labeler = BradleyTerryLabeler(oracle, scale=config.bt_scale, rng=random.Random(config.seed))
    users = SimulatedUsers(
        store,
        service,
        labeler,
        params,
        system_prompt=config.system_prompt,
        n_users=config.n_users,
        seed=config.seed,
    )
    evaluator = Evaluator(
        service,
        oracle,
        heldout,
        capability,
        params,
        hf_base_for(embedded_model_path(), config.work_dir),
        system_prompt=config.system_prompt,
        samples_per_prompt=config.samples_per_prompt,
    )
    result: dict[str, Any] = {
        "oracle": oracle.name,
        "method": config.method,
        "label": method_label(config.method, config.cycle_overrides, config.policy_overrides),
        "config": config.to_dict(),
        "prompts": {"train": len(prompts.train), "heldout": len(heldout), "capability": len(capability)},
    }
    try:
        log(f"round 0: measuring the base version on {len(heldout)} held-out prompts ...")
        base_m = evaluator.measure_base(base.id)
        result["base"] = base_m.to_dict()
        log(_row_header())
        log(_row(0, None, base_m, None, elapsed()))
        deployed_m, records = base_m, []
        for r in range(1, config.rounds + 1):
            before = LabelStats(**asdict(labeler.stats))
            fb = users.give_feedback(
                prompts.train, config.feedback_per_round, config.mix, config.unrated_per_round
            )
            fb_summary = feedback_summary(fb, before, labeler.stats)
            t0 = time.perf_counter()
            run_id = scheduler.run_now_and_wait("simulation")
            cycle_s = time.perf_counter() - t0
            run = store.runs.get(run_id) if run_id is not None else None
            canary = None
            if run is not None and run.decision == "canary" and (live := store.canaries.live()):
                phase = users.canary_battles(prompts.train, live)
                canary = phase.to_dict()
                log(
                    f"  canary: {phase.decision} after {phase.battles} votes, {phase.ties} of them ties ({phase.by}); "
                    "gold prefers the "
                    f"candidate in {_fmt(phase.gold_rate, '.0%')} of those battles"
                )
                run = store.runs.get(run_id)
            service.sync_with_registry()
            candidate_id = run.candidate_version_id if run else None
            t0 = time.perf_counter()
            cand_m = None
            if candidate_id is not None:
                row = store.versions.get(candidate_id)
                cand_m = evaluator.measure(
                    candidate_id, row.adapter_path, latest_reward_model(config.work_dir)
                )
                if service.version_id == candidate_id:
                    deployed_m = cand_m
            measure_s = time.perf_counter() - t0
            record = RoundRecord(
                round=r,
                feedback=fb_summary,
                run_id=run_id,
                status=run.status if run else "not started",
                decision=run.decision if run else None,
                reasons=list(run.reasons or []) if run else [],
                candidate_version_id=candidate_id,
                deployed_version_id=service.version_id,
                stage_seconds=dict(run.stage_seconds or {}) if run else {},
                candidate=cand_m.to_dict() if cand_m else None,
                deployed=deployed_m.to_dict(),
                seconds={
                    "users": round(fb.seconds, 1),
                    "cycle": round(cycle_s, 1),
                    "measure": round(measure_s, 1),
                },
                elapsed_minutes=round(elapsed(), 2),
                canary=canary,
            )
            records.append(asdict(record))
            log(_row(r, record, cand_m, fb_summary, elapsed()))
            if run is not None and run.status != "succeeded":
                log(f"  cycle {run.status}: {(run.error or '').splitlines()[0] if run.error else ''}")
            elif record.decision == "rejected":
                log("  gate: " + "; ".join(record.reasons))
        result["rounds"] = records
        loop_s = sum(
            r["seconds"]["users"] + r["seconds"]["cycle"] + (r["canary"] or {}).get("seconds", 0)
            for r in records
        )
        result["canary"] = canary_summary(records)
        result["summary"] = summary(base_m, deployed_m, elapsed(), loop_s / 60)
    finally:
        scheduler.shutdown()
        service.close()
        store.close()
    (config.work_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


_COLUMNS = (
    ("round", 5),
    ("events", 7),
    ("pairs agree", 11),
    ("decision", 9),
    ("version", 7),
    ("gold", 7),
    ("win vs base", 11),
    ("KL", 6),
    ("proxy gain", 10),
    ("capability", 10),
    ("words", 6),
    ("minutes", 7),
)


def _row_header() -> str:
    return " ".join(name.rjust(width) for name, width in _COLUMNS)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(
    r: int, record: RoundRecord | None, m: Measurement | None, fb: dict[str, Any] | None, minutes: float
) -> str:
    values = [
        str(r),
        str(fb["total_events"]) if fb else "-",
        _fmt(fb.get("pair_agreement") if fb else None, ".0%"),
        (record.decision or record.status) if record else "base",
        str(m.version_id) if m else "-",
        _fmt(m.gold if m else None, ".3f"),
        _fmt(m.win_rate if m else None, ".0%"),
        _fmt(m.kl if m else None, ".2f"),
        _fmt(m.proxy_gain if m else None, "+.2f"),
        _fmt(100 * m.capability if m else None, ".1f"),
        _fmt(m.reply_words if m else None, ".0f"),
        f"{minutes:.1f}",
    ]
    return " ".join(v[:w].rjust(w) for v, (_, w) in zip(values, _COLUMNS, strict=True))
