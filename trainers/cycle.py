"""One training cycle of iterative deployment, as a command:

    python -m trainers.cycle --run-id N [--db ...] [--data-dir ...] [--model ...]

Stages: export the feedback -> train or refresh the reward model -> update the policy (DPO by default,
KTO when thumbs dominate, SFT when there are only demonstrations, or the configured method) ->
evaluate the candidate against the deployed version through the evaluation gate -> register it ->
deploy it when the gate passes and auto-deploy is on (otherwise it waits for a human click) or
reject it. Each stage's progress, timing and messages go to the ``training_runs`` row; the decision
and its reasons too.

Crash safety: the deployed version changes only in the final registry transaction. A cycle killed,
crashing, hitting a NaN loss or a full disk before that leaves the deployed version serving; the run
row is then marked failed (or killed, by the scheduler). Nothing runs in the web process: the
scheduler starts this module as a low-priority subprocess.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from feedback_store import datasets as ds
from feedback_store import safety
from feedback_store.runs import TrainingRuns
from feedback_store.store import FeedbackStore
from feedback_store.versions import VersionRegistry
from trainers.common import TrainingDataError
from trainers.gate import (
    FACTS,
    HARMFUL_REQUESTS,
    GateConfig,
    GateResult,
    decide,
    refusal_report,
    regression_report,
    spread_sample,
)
from trainers.run import (
    TrainRequest,
    hf_base_for,
    latest_reward_model,
    load_examples,
    run_training,
    served_base,
)

log = logging.getLogger("trainers.cycle")

# Share of the run's progress bar taken by each stage (they add up to 1).
STAGE_WEIGHTS = {"export": 0.05, "reward": 0.30, "policy": 0.40, "evaluate": 0.20, "deploy": 0.05}


@dataclass
class CycleConfig:
    db_path: Path
    data_dir: Path
    model: str | None = None
    method: str = "auto"
    """"auto" (DPO; KTO when thumbs dominate; SFT with only demonstrations) or one of dpo/kto/sft/rl/best_of_n."""
    auto_deploy: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    reward_overrides: dict[str, Any] = field(default_factory=dict)
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    threads: int | None = 1
    """torch threads for training: 1 leaves the other core to the chat server on a 2-core machine."""
    init_from: str = "base"
    excluded_users: frozenset[str] = frozenset()
    """Users left out besides those the hygiene rules exclude (``feedback_store.safety``)."""
    hygiene: bool = True
    """Leave out flagged text and rate-limited / repeatedly flagged / operator-excluded users."""
    min_pairs: int = 16
    min_unpaired: int = 16
    n_ctx: int = 2048
    chat_template: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            db_path=str(self.db_path), data_dir=str(self.data_dir), excluded_users=sorted(self.excluded_users)
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CycleConfig:
        d = dict(d)
        d["db_path"], d["data_dir"] = Path(d["db_path"]), Path(d["data_dir"])
        d["gate"] = GateConfig(**d.get("gate", {}))
        d["excluded_users"] = frozenset(d.get("excluded_users", ()))
        return cls(**d)


@dataclass
class CycleOutcome:
    decision: str
    reasons: list[str]
    candidate_version_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def choose_method(
    n_pairs: int, n_good: int, n_bad: int, n_demos: int, min_pairs: int = 16, min_unpaired: int = 16
) -> str | None:
    """The policy method for the data at hand (pure)."""
    unpaired_ok = n_good + n_bad >= min_unpaired and min(n_good, n_bad) >= 2
    if unpaired_ok and n_good + n_bad >= 2 * max(n_pairs, 1) and n_pairs < 4 * min_pairs:
        return "kto"  # thumbs dominate: learn from them directly
    if n_pairs >= min_pairs:
        return "dpo"
    if unpaired_ok:
        return "kto"
    if n_demos >= 8:
        return "sft"
    return None


class _Stages:
    """Progress bookkeeping: each stage's share of the bar, its wall time, and the run row."""

    def __init__(self, runs: TrainingRuns | None, run_id: int | None):
        self.runs, self.run_id = runs, run_id
        self.seconds: dict[str, float] = {}
        self._done = 0.0
        self._current: str | None = None
        self._t = time.perf_counter()

    def begin(self, stage: str, message: str) -> None:
        self._close()
        self._current, self._t = stage, time.perf_counter()
        log.info("[%s] %s", stage, message)
        if self.runs:
            self.runs.update(self.run_id, stage=stage, progress=self._done, message=message)

    def within(self, message: str, fraction: float) -> None:
        """Progress inside the current stage (``fraction`` of it done)."""
        log.info("[%s] %s", self._current, message)
        if self.runs and self._current:
            share = STAGE_WEIGHTS.get(self._current, 0.0)
            self.runs.update(
                self.run_id, progress=self._done + share * max(0.0, min(1.0, fraction)), message=message
            )

    def _close(self) -> None:
        if self._current is not None:
            self.seconds[self._current] = round(time.perf_counter() - self._t, 2)
            self._done += STAGE_WEIGHTS.get(self._current, 0.0)
            if self.runs:
                self.runs.update(self.run_id, stage_seconds=self.seconds)
            self._current = None

    def end(self) -> dict[str, float]:
        self._close()
        return self.seconds


def _check_finite(metrics: dict[str, Any], what: str) -> None:
    """A NaN or infinite loss means the adapter is garbage: fail the cycle rather than evaluate it."""
    losses = [p.get("loss") for p in metrics.get("loss_curve", [])]
    if any(v is not None and not math.isfinite(v) for v in losses):
        raise FloatingPointError(f"{what} training diverged (non-finite loss); the candidate is discarded")


def run_cycle(config: CycleConfig, run_id: int | None = None) -> CycleOutcome:
    store = FeedbackStore(config.db_path)
    runs = TrainingRuns(store) if run_id is not None else None
    stages = _Stages(runs, run_id)
    try:
        return _run(config, store, runs, run_id, stages)
    finally:
        stages.end()
        store.close()


def _run(config: CycleConfig, store: FeedbackStore, runs, run_id, stages: _Stages) -> CycleOutcome:
    registry = VersionRegistry(store)
    base = served_base(config.model)
    base_id = base.name
    base_row = store.ensure_base_version(base_id)
    deployed = registry.deployed(base_id) or base_row
    if config.hygiene:  # who is excluded is decided now, from the store, not when the server started
        config = replace(config, excluded_users=config.excluded_users | safety.excluded_users(store))
    req = dict(
        db_path=config.db_path,
        data_dir=config.data_dir,
        model=config.model,
        training_run_id=run_id,
        init_from=config.init_from,
        excluded_users=config.excluded_users,
        hygiene=config.hygiene,
    )

    # 1. export: what there is to learn from, saved next to the run for inspection and reproduction.
    stages.begin("export", "reading the feedback")
    clean = {"exclude_flagged": config.hygiene}
    pairs = [p for p in ds.preference_pairs(store, **clean) if p.user_id not in config.excluded_users]
    unpaired = [u for u in ds.unpaired_feedback(store, **clean) if u.user_id not in config.excluded_users]
    demos = [d for d in ds.demonstrations(store, **clean) if d.user_id not in config.excluded_users]
    n_good = sum(1 for u in unpaired if u.label)
    counts = {
        "pairs": len(pairs),
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
        else choose_method(
            len(pairs), n_good, len(unpaired) - n_good, len(demos), config.min_pairs, config.min_unpaired
        )
    )
    stages.within(f"{counts}; policy method: {method or 'none'}", 1.0)
    if runs:
        runs.update(run_id, metrics={"data": counts, "method": method})
    if method is None:
        raise TrainingDataError(
            f"not enough feedback to train: {counts['pairs']} preference pairs (need {config.min_pairs}), "
            f"{len(unpaired)} thumbs (need {config.min_unpaired} with both kinds), {len(demos)} demonstrations (need 8)"
        )

    # 2. reward model: refreshed whenever there are enough pairs, else the latest one is reused.
    stages.begin("reward", "training the reward model")
    reward_metrics: dict[str, Any] = {}
    reward_adapter = latest_reward_model(config.data_dir)
    if len(pairs) >= config.min_pairs:
        outcome = run_training(
            TrainRequest(
                method="reward", overrides={"threads": config.threads, **config.reward_overrides}, **req
            ),
            progress=lambda m, f: stages.within(m, f),
        )
        _check_finite(outcome.result.metrics, "reward model")
        reward_adapter = outcome.result.adapter_dir
        reward_metrics = {k: v for k, v in outcome.result.metrics.items() if k.startswith("heldout_")}
    else:
        stages.within(f"only {len(pairs)} pairs: keeping reward model {reward_adapter}", 1.0)

    # 3. policy update -> candidate version (adapter + GGUF export for llama.cpp).
    stages.begin("policy", f"training the policy with {method}")
    policy = run_training(
        TrainRequest(
            method=method,
            reward_adapter=str(reward_adapter) if reward_adapter else None,
            overrides={"threads": config.threads, **config.policy_overrides},
            eval_prompts=config.gate.eval_prompts,
            **req,
        ),
        progress=lambda m, f: stages.within(m, f),
    )
    _check_finite(policy.result.metrics, method)
    candidate = registry.get(policy.version_id)
    if runs:
        runs.update(run_id, candidate_version_id=candidate.id)

    # 4. the gate: candidate vs deployed on held-out data, through the artifact that would be served.
    stages.begin("evaluate", f"evaluating candidate v{candidate.id} against deployed v{deployed.id}")
    gate = evaluate_candidate(
        config, store, base, candidate, deployed, base_row, policy.result.metrics, reward_adapter, stages
    )
    metrics = {**reward_metrics, **gate.metrics, "method": method, "data": counts}
    registry.update_metrics(
        candidate.id, {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
    )

    # 5. decide: the only step that changes what is served, one registry transaction.
    stages.begin("deploy", "applying the gate's decision")
    events = TrainingRuns(store)
    if not gate.passed:
        registry.set_status(candidate.id, "rejected", notes="; ".join(gate.reasons))
        events.record_event(candidate.id, "reject", "gate", gate.reasons, run_id)
        decision = "rejected"
    elif config.auto_deploy:
        registry.deploy(candidate.id)
        events.record_event(candidate.id, "deploy", "gate", gate.reasons, run_id)
        decision = "deployed"
    else:
        decision = "awaiting_approval"
    stages.within(f"decision: {decision}", 1.0)
    return CycleOutcome(decision, gate.reasons, candidate.id, metrics, stages.end())


def evaluate_candidate(
    config: CycleConfig,
    store: FeedbackStore,
    base: Path,
    candidate,
    deployed,
    base_row,
    training_metrics: dict[str, Any],
    reward_adapter: Path | None,
    stages: _Stages,
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
        prompts = _gate_prompts(store, config)
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

        system = (
            [{"role": "system", "content": config.gate.system_prompt}] if config.gate.system_prompt else []
        )

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


def _gate_prompts(store: FeedbackStore, config: CycleConfig) -> list[list[dict[str, str]]]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one cycle for an existing run row (the scheduler creates it) or a new one."""
    ap = argparse.ArgumentParser(prog="python -m trainers.cycle", description="Run one training cycle.")
    ap.add_argument("--run-id", type=int, help="the training_runs row to report into (created if omitted)")
    ap.add_argument("--config", help="JSON CycleConfig (the scheduler passes it)")
    ap.add_argument("--db", default="data/playground.db")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--model")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--no-auto-deploy", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.config:
        config = CycleConfig.from_dict(json.loads(Path(args.config).read_text()))
    else:
        config = CycleConfig(
            db_path=Path(args.db),
            data_dir=Path(args.data_dir),
            model=args.model,
            method=args.method,
            auto_deploy=not args.no_auto_deploy,
        )
    store = FeedbackStore(config.db_path)
    try:
        run_id = args.run_id or TrainingRuns(store).start("cli", config.to_dict(), pid=os.getpid()).id
    finally:
        store.close()
    return run_cycle_for(config, run_id)


def run_cycle_for(config: CycleConfig, run_id: int) -> int:
    """Run the cycle for an existing run row and record its outcome there; returns an exit code."""
    # A polite stop (SIGTERM from the scheduler or a user) unwinds normally and is recorded as killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    store = FeedbackStore(config.db_path)
    runs = TrainingRuns(store)
    handler = None
    try:
        runs.set_pid(run_id, os.getpid())
        if not runs.get(run_id).log_path:  # run from a terminal: keep a log file the Training tab can show
            log_path = config.data_dir / "runs" / f"run-{run_id}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
            runs.update(run_id, log_path=str(log_path))
        try:
            outcome = run_cycle(config, run_id)
        except TrainingDataError as exc:
            runs.finish(run_id, "succeeded", decision="no_candidate", reasons=[str(exc)])
            print(f"no candidate: {exc}", file=sys.stderr)
            return 0
        except (KeyboardInterrupt, SystemExit) as exc:
            runs.finish(run_id, "killed", error=f"stopped ({type(exc).__name__})")
            return 130
        except Exception as exc:
            runs.finish(
                run_id, "failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            )
            print(f"cycle failed: {exc}", file=sys.stderr)
            return 1
        runs.finish(
            run_id,
            "succeeded",
            decision=outcome.decision,
            reasons=outcome.reasons,
            metrics={**outcome.metrics, "stage_seconds": outcome.stage_seconds},
        )
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "decision": outcome.decision,
                    "candidate": outcome.candidate_version_id,
                    "reasons": outcome.reasons,
                    "stage_seconds": outcome.stage_seconds,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
