"""The simulated-user loop as a command: ``python -m simulation`` (the Dashboard's "Run a simulated loop"
button starts it) and ``python -m benchmarks.loop`` (the same command, with ``--quick``).

    python -m simulation --oracle vader --rounds 3 --feedback-per-round 200

Each round: the simulated users chat with the deployed version on training prompts and give thumbs,
A/B votes and K-rankings (Bradley-Terry noise on the gold reward) through the Chat / Compare / Rank
tabs' calls -> the scheduler runs one real training cycle in a child process (reward model, policy,
evaluation gate, deploy or reject) -> the served model swaps -> the candidate is measured: mean gold
reward, gold win rate against the base, KL to the base, the reward model's proxy score next to the gold
score, and capability (factual questions, greedy).

Prints a table per round; writes ``DATA_DIR/loop/results/ORACLE-LABEL.json`` (LABEL: the method and its training variant, ``simulation.rounds.method_label``), ``DATA_DIR/loop/latest.json``
and the plot ``DATA_DIR/loop/latest.png`` (gold against KL for every method run with this oracle; the
Dashboard shows it). The last line is a JSON object with gold_base, gold_final, win_rate_final,
kl_final, capability_base, capability_final (percent) and minutes (wall clock, everything included).
Everything happens in its own work directory: the users' feedback and the deployed version are never
touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from settings import DPO_LOSSES, TrainingSettings
from simulation.oracles import ORACLES, make_oracle
from simulation.users import EventMix
from trainers.gate import GateConfig

METHODS = ("dpo", "kto", "orpo", "simpo", "rl", "best_of_n")
# Feedback each method learns from: DPO and the reward model from pairs, KTO from thumbs (plus some
# votes, so a reward model exists for the gate's win rate), RL and best-of-n from the reward model.
DEFAULT_MIX = {
    "dpo": "thumbs=0.4,votes=0.5,rankings=0.1",
    "kto": "thumbs=0.7,votes=0.3",
    "orpo": "thumbs=0.4,votes=0.5,rankings=0.1",
    "simpo": "thumbs=0.4,votes=0.5,rankings=0.1",
    "rl": "thumbs=0.4,votes=0.5,rankings=0.1",
    "best_of_n": "thumbs=0.4,votes=0.5,rankings=0.1",
}
# About 15 minutes a DPO round on 2 CPU cores (docs/loop.md has the measured stage times).
DEFAULT_POLICY = {
    "dpo": {"max_steps": 30, "learning_rate": 3e-4, "max_length": 160, "batch_size": 8},
    "kto": {"max_steps": 30, "learning_rate": 3e-4, "max_length": 160, "batch_size": 8},
    "orpo": {"max_steps": 30, "learning_rate": 3e-4, "max_length": 160, "batch_size": 8},
    "simpo": {"max_steps": 30, "learning_rate": 3e-4, "max_length": 160, "batch_size": 8},
    "rl": {"max_steps": 12, "learning_rate": 5e-5, "max_length": 160, "batch_size": 4, "num_generations": 4},
    "best_of_n": {"max_steps": 30, "learning_rate": 2e-4, "max_length": 160, "batch_size": 8, "n": 4},
}
# The reward model's score head is new in the first cycle (later cycles warm-start it from the previous
# cycle's): a higher learning rate than the policy's.
DEFAULT_REWARD = {"max_steps": 30, "learning_rate": 1e-3, "max_length": 160, "batch_size": 8}


def build_parser(prog: str = "python -m simulation") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--oracle", choices=sorted(ORACLES), default="vader", help="the simulated users' gold preference"
    )
    p.add_argument(
        "--oracle-file",
        metavar="PATH.py:ClassName",
        help="your own gold preference instead of --oracle: a class with name, prompt_set, "
        "thumbs_threshold and score(task, reply) (docs/loop.md)",
    )
    p.add_argument("--method", choices=METHODS, default="dpo", help="the cycle's policy method")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--feedback-per-round", type=int, default=200, help="feedback events per round (a ranking is one)"
    )
    p.add_argument(
        "--mix", help="shares of thumbs, votes and rankings, e.g. thumbs=0.4,votes=0.5,rankings=0.1"
    )
    p.add_argument("--k", type=int, default=4, help="replies per ranking")
    p.add_argument("--max-new-tokens", type=int, default=40, help="reply length for users and measurements")
    p.add_argument(
        "--bt-scale", type=float, default=4.0, help="labeler consistency: P(A>B) = sigmoid(scale*(gA-gB))"
    )
    p.add_argument(
        "--samples-per-prompt", type=int, default=2, help="held-out replies per prompt and version"
    )
    p.add_argument(
        "--init-from", choices=["deployed", "base"], default="deployed", help="policy start each round"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (serving and training take turns)")
    p.add_argument("--max-steps", type=int, help="policy optimiser steps per round")
    p.add_argument("--reward-max-steps", type=int, help="reward-model optimiser steps per round")
    p.add_argument("--lr", type=float, help="policy learning rate")
    p.add_argument("--beta", type=float, help="policy KL strength (DPO/KTO beta, RLOO beta)")
    p.add_argument(
        "--dpo-loss",
        choices=DPO_LOSSES,
        help="DPO's loss (with --method dpo); unset: the product's default (--dpo-loss)",
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        help="DPO: the probability that a vote is flipped (robust DPO); unset: the product's default",
    )
    # The gate is the product's (trainers.gate, the server's --gate-* defaults) unless a flag says otherwise;
    # any override is printed in the table's header and stored with the result.
    default = GateConfig()
    p.add_argument(
        "--gate-min-win-rate", type=float, help=f"unset: the product's default ({default.min_win_rate})"
    )
    p.add_argument("--gate-kl-budget", type=float, help=f"unset: the product's default ({default.kl_budget})")
    p.add_argument(
        "--gate-max-regressions",
        type=int,
        help=f"lost facts or refusals let through; unset: the product's default ({default.max_regressions})",
    )
    p.add_argument(
        "--gate-eval-prompts", type=int, help=f"unset: the product's default ({default.eval_prompts})"
    )
    p.add_argument(
        "--ptx-coef", type=float, help="the replay term's weight; unset: the product's default (--ptx-coef)"
    )
    p.add_argument(
        "--lora-layers",
        type=float,
        help="share of the blocks, from the top, with LoRA; unset: the product's default (--train-lora-layers)",
    )
    p.add_argument(
        "--ai-pairs",
        type=int,
        help="RLAIF: pairs per cycle the reward model labels on chats without feedback; unset: the "
        "product's default (--train-ai-pairs)",
    )
    p.add_argument(
        "--unrated-per-round",
        type=int,
        default=0,
        help="chats per round that get no feedback (what --ai-pairs labels); not feedback events",
    )
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.0,
        help="canary battles (--canary-share of the product): a candidate the gate did not reject is put "
        "before the simulated users in canary battles until their votes decide; 0: off",
    )
    p.add_argument(
        "--canary-votes",
        type=int,
        help="the canary's vote budget; unset: the product's default (--canary-votes)",
    )
    p.add_argument("--heldout-limit", type=int, help="measure on at most this many held-out prompts")
    p.add_argument("--capability-limit", type=int, help="at most this many capability questions")
    p.add_argument("--seed", type=int, default=0, help="the simulated users' seed (prompts, labels, samples)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat the whole loop with seeds SEED, SEED+1, ...; the last line then reports each figure's "
        "mean and 95%% interval over them",
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("PLAYGROUND_DATA_DIR", "data"),
        help="results go to DATA_DIR/loop",
    )
    p.add_argument(
        "--work-dir", help="this run's database and adapters (default DATA_DIR/loop/runs/ORACLE-METHOD-TIME)"
    )
    p.add_argument(
        "--keep-adapters", action="store_true", help="keep the work directory's adapters afterwards"
    )
    return p


def _given(**flags: Any) -> dict[str, Any]:
    """The flags that were given (not None), under their settings' names."""
    return {k: v for k, v in flags.items() if v is not None}


def gate_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The gate settings this run changes from the product's defaults (flags given, quick sizes)."""
    given = _given(
        min_win_rate=args.gate_min_win_rate,
        kl_budget=args.gate_kl_budget,
        max_regressions=args.gate_max_regressions,
        eval_prompts=args.gate_eval_prompts,
    )
    return {**given, **getattr(args, "gate_checks", {})}


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The trainers' settings a flag changed from the loop's defaults (``DEFAULT_POLICY``,
    ``DEFAULT_REWARD``), for the header beside the figures."""
    given = _given(
        beta=args.beta,
        learning_rate=args.lr,
        max_steps=args.max_steps,
        reward_max_steps=args.reward_max_steps,
    )
    return {**given, **getattr(args, "trainer_sizes", {})}


def build_config(args: argparse.Namespace):
    from simulation.rounds import LoopConfig

    data_dir = Path(args.data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    spec = args.oracle_file or args.oracle
    name = make_oracle(spec).name  # a broken oracle file fails here, before anything runs
    work = (
        Path(args.work_dir) if args.work_dir else data_dir / "loop" / "runs" / f"{name}-{args.method}-{stamp}"
    )
    if args.method != "dpo" and (args.dpo_loss or args.label_smoothing is not None):
        raise ValueError("--dpo-loss and --label-smoothing are DPO's: use them with --method dpo")
    if args.label_smoothing is not None:  # the product's own bounds (settings), not a copy of them
        try:
            TrainingSettings(label_smoothing=args.label_smoothing)
        except ValidationError as error:
            raise ValueError(
                f"--label-smoothing {args.label_smoothing}: {error.errors()[0]['msg']}"
            ) from None
    policy = dict(DEFAULT_POLICY[args.method])
    reward = dict(DEFAULT_REWARD)
    if args.max_steps is not None:
        policy["max_steps"] = args.max_steps
    if args.reward_max_steps is not None:
        reward["max_steps"] = args.reward_max_steps
    sizes = getattr(args, "trainer_sizes", {})
    policy.update(sizes)
    reward.update(sizes)
    if args.lr is not None:
        policy["learning_rate"] = args.lr
    if args.beta is not None:
        policy["beta"] = args.beta
    if args.method in ("rl", "best_of_n"):
        key = "max_completion_length" if args.method == "rl" else "max_new_tokens"
        policy[key] = args.max_new_tokens
    return LoopConfig(
        work_dir=work,
        hf_cache=Path(getattr(args, "hf_cache", None) or data_dir / "hf-base"),
        oracle=spec,
        method=args.method,
        rounds=args.rounds,
        feedback_per_round=args.feedback_per_round,
        mix=EventMix.parse(args.mix or DEFAULT_MIX[args.method], k=args.k),
        max_new_tokens=args.max_new_tokens,
        bt_scale=args.bt_scale,
        samples_per_prompt=args.samples_per_prompt,
        init_from=args.init_from,
        threads=args.threads,
        seed=args.seed,
        reward_overrides=reward,
        policy_overrides=policy,
        gate=GateConfig(**gate_overrides(args)),
        gate_overrides=gate_overrides(args),
        cycle_overrides=_given(
            ptx_coef=args.ptx_coef,
            lora_layers=args.lora_layers,
            ai_pairs=args.ai_pairs,
            dpo_loss=args.dpo_loss,
            label_smoothing=args.label_smoothing,
        ),
        unrated_per_round=args.unrated_per_round,
        canary_overrides=_given(share=args.canary_share or None, votes=args.canary_votes),
        heldout_limit=args.heldout_limit,
        capability_limit=args.capability_limit,
    )


def publish(result: dict, loop_dir: Path) -> Path:
    """Write the result where the Dashboard finds it and redraw the plot of every method for this oracle."""
    from simulation.plots import load_results, save_figure

    results = loop_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str)
    for path in (
        results / f"{result['oracle']}-{result.get('label', result['method'])}.json",
        loop_dir / "latest.json",
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    png = save_figure(load_results(loop_dir, result["oracle"]), loop_dir / "latest.png")
    shutil.copyfile(png, Path(result["config"]["work_dir"]) / "loop.png")
    return png


def run(
    args: argparse.Namespace, before_json: Callable[[], None] = lambda: None, every_round_trains: bool = False
) -> int:
    """Run the loop the arguments describe; prints the rounds, then (after ``before_json``) the JSON line.
    A round whose cycle trained nothing is named on stderr with its reason; with ``every_round_trains``
    (a smoke run, which exists to prove every stage) it makes the exit status 1."""
    if args.rounds < 1 or args.feedback_per_round < 1:
        print("error: --rounds and --feedback-per-round must be at least 1", file=sys.stderr)
        return 2
    # Stop (SIGTERM, e.g. the Dashboard's button) unwinds: the running cycle is stopped and recorded.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    summaries, idle_rounds = [], 0
    for seed in range(args.seed, args.seed + args.seeds):
        one = argparse.Namespace(**{**vars(args), "seed": seed})
        if args.seeds > 1 and args.work_dir:
            one.work_dir = f"{args.work_dir}-seed{seed}"
        code, summary, idle = _run_one(one, before_json if args.seeds == 1 else lambda: None)
        if code:
            return code
        summaries.append({"seed": seed, **summary})
        idle_rounds += idle
    if args.seeds > 1:
        pooled = aggregate(summaries)
        print(_seeds_table(summaries))
        loop_dir = Path(args.data_dir) / "loop" / "results"
        loop_dir.mkdir(parents=True, exist_ok=True)
        (loop_dir / f"{summaries[0]['oracle']}-{summaries[0]['label']}-seeds.json").write_text(
            json.dumps(pooled, indent=2)
        )
        before_json()
        print(json.dumps(pooled))
    return 1 if idle_rounds and every_round_trains else 0


FIGURES = ("gold_base", "gold_final", "win_rate_final", "kl_final", "capability_base", "capability_final",
           "minutes", "loop_minutes")  # fmt: skip


def aggregate(summaries: Sequence[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Each figure's mean over the seeds and its ``confidence`` interval (Student's t: few seeds, an
    unknown spread), with the runs themselves."""
    from scipy import stats

    out: dict[str, Any] = {
        "oracle": summaries[0]["oracle"],
        "method": summaries[0]["method"],
        "seeds": [s["seed"] for s in summaries],
    }
    for key in FIGURES:
        values = [float(s[key]) for s in summaries if s.get(key) is not None]
        if not values:
            continue
        mean = sum(values) / len(values)
        out[f"{key}_mean"] = round(mean, 4)
        if len(values) > 1:
            sem = stats.sem(values)
            half = 0.0 if sem == 0 else float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * sem)
            out[f"{key}_ci95"] = [round(mean - half, 4), round(mean + half, 4)]
    out["runs"] = list(summaries)
    return out


def _seeds_table(summaries: Sequence[dict[str, Any]]) -> str:
    keys = ("win_rate_final", "gold_final", "kl_final", "capability_final", "loop_minutes")
    lines = ["seed " + " ".join(k.rjust(16) for k in keys)]
    for s in summaries:
        lines.append(f"{s['seed']:>4} " + " ".join(f"{s.get(k)!s:>16}" for k in keys))
    return "\n".join(lines)


def _overrides(changed: dict[str, Any]) -> str:
    if not changed:
        return "the product default"
    return "overrides of the product default: " + ", ".join(f"{k}={v}" for k, v in changed.items())


def _run_one(args: argparse.Namespace, before_json: Callable[[], None]) -> tuple[int, dict[str, Any], int]:
    """One loop: (exit status, the summary line's figures, rounds that trained no candidate)."""
    from simulation.rounds import run_loop

    try:
        config = build_config(args)
    except ValueError as exc:  # an oracle file that does not load, a task file that does not parse
        print(f"error: {exc}", file=sys.stderr)
        return 2, {}, 0
    print(
        f"oracle {config.oracle}, method {config.method}: {config.rounds} rounds x {config.feedback_per_round} "
        f"feedback events ({config.mix})"
        + (f" and {config.unrated_per_round} unrated chats" if config.unrated_per_round else "")
        + f"; work directory {config.work_dir}",
        flush=True,
    )
    print(f"gate: {_overrides(config.gate_overrides)}")
    # the loop's time budget, applied to every cycle: the product's own cycle trains full epochs
    print(
        "training budget of the loop, every cycle (the product's cycle trains full epochs): reward model "
        + ", ".join(f"{k}={v}" for k, v in config.reward_overrides.items())
        + "; policy "
        + ", ".join(f"{k}={v}" for k, v in config.policy_overrides.items())
    )
    trained = {**config.cycle_overrides, **flag_overrides(args)}
    if trained:
        print(f"training: {_overrides(trained)}")
    if config.canary_overrides:
        print(f"canary battles: {_overrides(config.canary_overrides)}")
    result = run_loop(config, log=lambda line: print(line, flush=True))
    png = publish(result, Path(args.data_dir) / "loop")
    if not args.keep_adapters:  # adapters are ~10 MB each per round; the figures are in the JSON
        for sub in ("adapters", "reward_models"):
            shutil.rmtree(config.work_dir / sub, ignore_errors=True)
    print(f"plot: {png}")
    before_json()
    summary = {
        "oracle": result["oracle"],
        "method": config.method,
        "label": result["label"],
        **result["summary"],
    }
    if result.get("canary"):  # rounds with canary battles: votes each needed, decisions, gold agreement
        summary["canary"] = result["canary"]
    print(json.dumps(summary))
    idle = [r for r in result["rounds"] if r["decision"] in (None, "no_candidate")]
    for r in idle:
        print(
            f"warning: round {r['round']} trained no candidate ({r['status']}): {'; '.join(r['reasons'])}. "
            "Give each round more feedback (--feedback-per-round) or a mix with more votes (--mix).",
            file=sys.stderr,
        )
    return 0, summary, len(idle)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
