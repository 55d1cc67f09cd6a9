"""Does the feedback loop improve the model? Simulated users with a known gold preference drive the
real product for a few rounds of iterative deployment, and every round is measured on held-out prompts.

    python -m benchmarks.loop --oracle vader --rounds 3 --feedback-per-round 200
    python -m benchmarks.loop --oracle concise --method kto --rounds 2
    python -m benchmarks.loop --oracle vader --rounds 3 --seeds 3   # mean and 95% interval over 3 seeds
    python -m benchmarks.loop --quick        # one tiny round, every stage, in a temporary DATA_DIR

Each round: the simulated users chat with the deployed version on training prompts and give thumbs,
A/B votes and K-rankings (Bradley-Terry noise on the gold reward) through the Chat / Compare / Rank
tabs' calls -> the scheduler runs one real training cycle in a child process (reward model, policy,
evaluation gate, deploy or reject) -> the served model swaps -> the candidate is measured: mean gold
reward, gold win rate against the base, KL to the base, the reward model's proxy score next to the gold
score, and capability (factual questions, greedy). The loop itself is the product package
``simulation`` (``python -m simulation`` runs the same command without ``--quick``).

Prints a table per round; writes ``DATA_DIR/loop/results/ORACLE-METHOD.json``, ``DATA_DIR/loop/latest.json``
and the plot ``DATA_DIR/loop/latest.png`` (gold against KL for every method run with this oracle; the
Dashboard shows it). The last line is a JSON object with gold_base, gold_final, win_rate_final,
kl_final, capability_base, capability_final (percent) and minutes (wall clock, everything included).

``--quick``: one round of 32 feedback events, one optimiser step for the reward model and the policy
(64 tokens, LoRA on q/v), a lenient gate on 2 prompts, 2 facts and 1 refusal (so the deploy and the
swap run), 2 held-out prompts and 2 capability questions, one OpenMP thread that sleeps while it
waits, and DATA_DIR a new temporary directory unless --data-dir is given (the dequantized base in the
quick runs' shared temporary folder). It proves the command works (exit 1 when the round trained
no candidate);
its figures say nothing about the loop.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmarks import quick
from simulation.cli import build_config, build_parser, publish, run

__all__ = ["build_config", "main", "parse_args", "publish"]

# The smallest round that still runs every stage (the settings tests/benchmarks/test_loop_round.py uses,
# with one step): feedback through the tabs' calls, a cycle, the gate, the deploy, the swap, measuring.
QUICK = {
    "rounds": 1,
    "seeds": 1,
    "feedback_per_round": 32,  # the default mix's 16 votes + 3 rankings: DPO's minimum of 16 votes
    "max_new_tokens": 16,
    "samples_per_prompt": 1,
    "heldout_limit": 2,
    "capability_limit": 2,
    "max_steps": 1,
    "reward_max_steps": 1,
    "gate_min_win_rate": 0.0,
    "gate_kl_budget": 1000.0,
    "gate_max_regressions": 99,
    "gate_eval_prompts": 2,
    "threads": 1,
    "canary_votes": 4,  # with --canary-share: four canary battles
    # no flags for these
    # min_examples: the trainers' minimum is on the training split, after the held-out prompts are set aside
    "trainer_sizes": {
        "max_length": 64,
        "batch_size": 4,
        "lora_targets": ["q_proj", "v_proj"],
        "min_examples": 8,
    },
    # preference_margin 0.5 never vetoes: with one held-out pair a one-step candidate fails it at random
    "gate_checks": {
        "facts": 2,
        "refusals": 1,
        "preference_margin": 0.5,
        "kl_prompts": 2,
        "max_new_tokens": 16,
    },
}


CAPS = ("rounds", "feedback_per_round", "seeds")  # held at the quick values even when typed larger


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser(prog="python -m benchmarks.loop")
    quick.add_quick_flag(p)
    args = p.parse_args(argv)
    args.quick_applied = quick.apply_quick(p, args, QUICK, argv, caps=CAPS)
    if args.quick and not quick.given(p, "data_dir", list(sys.argv[1:] if argv is None else argv)):
        args.data_dir = str(quick.scratch_dir("bench-loop-"))  # a quick run never writes into ./data
        args.quick_applied["data_dir"] = args.data_dir
    if args.quick:
        args.hf_cache = str(quick.hf_cache(args.data_dir if "data_dir" not in args.quick_applied else None))
        args.quick_applied["hf_cache"] = args.hf_cache
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        quick.calm_threads(args.quick_applied)  # before torch is imported
    quick.announce(args.quick_applied, args.quick)
    return run(
        args,
        before_json=lambda: quick.announce(args.quick_applied, args.quick),
        every_round_trains=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
