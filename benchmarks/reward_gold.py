"""How well the cycle's reward model predicts the gold preference, on a loop run's own feedback.

    python -m benchmarks.reward_gold [RUN_DIR] [--variants 0.3:30,1.0:30,0.3:90,1.0:90] [--split-seed N]
                                     [--quick]

The loop (``benchmarks.loop``) logs the cycle's reward-model accuracy on held-out pairs against the
simulated users' labels, which are noisy (Bradley-Terry choices on the gold difference), so a low figure
there may be the labels' noise or the model's. This reads a finished loop run (default: the newest
under ``DATA_DIR/loop/runs``), splits its people's preference pairs by prompt group (near-duplicates on
one side) into train and held-out (``--split-seed`` draws another split), and trains the reward model
once per variant: ``LAYERS:STEPS`` is LoRA on the upper LAYERS share of the blocks for STEPS optimiser
steps, everything else as the run's cycle trained it (its ``loop_config.json``); ``product`` trains as
the product's cycle does (one epoch at the product's reward-model settings) instead of the loop's step
budget. It prints how often the labels agree with gold (what a reward model that knew the gold
preference would score against them), then for each variant the held-out accuracy against the labels
and against the gold preference (on the pairs whose gold scores differ), each with a 95% bootstrap
interval over pairs, the change in gold accuracy against the first variant on the same pairs (a paired
bootstrap: the figure to decide between two variants by) and the training seconds. The last line is a
JSON object.

``--quick`` makes one variant of one step on at most 24 training pairs and, when no run
is given, reads a small one it writes itself first in a temporary folder (48 factual prompts of the
concise oracle's set, each with a short correct reply and a long wrong one, a Bradley-Terry vote between
them): a smoke test, its figures are not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import quick

QUICK = {"variants": "0.3:1", "max_train_pairs": 24}


def quick_run(folder: Path, hf_cache: Path) -> Path:
    """A tiny stand-in for a loop run (quick mode only): votes through the store API, as the loop writes
    them, between a short correct and a long wrong reply to the concise oracle's prompts."""
    from feedback_store.store import AssistantTurn, FeedbackStore
    from models.embedded import embedded_model_path
    from simulation.labelers import BradleyTerryLabeler
    from simulation.oracles import make_oracle
    from simulation.tasks import prompt_set

    oracle = make_oracle("concise")
    labeler = BradleyTerryLabeler(oracle)
    store = FeedbackStore(folder / "playground.db")
    try:
        base = store.versions.ensure_base(embedded_model_path().name)
        for i, task in enumerate(prompt_set(oracle.prompt_set).train[:48]):
            conv = store.create_conversation(f"user{i % 4}", source="compare")
            question = store.add_message(conv, "user", task.prompt)
            replies = [
                f"{task.answers[0]}.",
                "I am not sure, there are many possible answers to that one " * 2,
            ]
            a, b = replies if i % 2 else replies[::-1]
            ids = [
                store.add_assistant_message(
                    conv, question, AssistantTurn(content=r, model_version_id=base.id)
                )
                for r in (a, b)
            ]
            store.feedback.record_comparison(*ids, f"user{i % 4}", labeler.vote(task, a, b), mode="samples")
    finally:
        store.close()
    config = {
        "oracle": "concise",
        "hf_cache": str(hf_cache),
        "threads": 1,
        "reward_overrides": {"batch_size": 4},
    }
    (folder / "loop_config.json").write_text(json.dumps(config))
    return folder


def newest_run(data_dir: Path) -> Path:
    runs = sorted((data_dir / "loop" / "runs").glob("*/loop_config.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(
            f"error: no loop run under {data_dir / 'loop' / 'runs'}; run `python -m benchmarks.loop` first "
            "or give a run's directory"
        )
    return runs[-1].parent


def parse_variants(text: str) -> list[tuple[float, int | None]]:
    """``LAYERS:STEPS`` items, or ``product``: the product's own reward-model settings (one epoch at its
    learning rate, batch and length, LoRA on its default share of the blocks), shown as STEPS ``epoch``."""
    from settings import LORA_LAYERS

    out: list[tuple[float, int | None]] = []
    for item in text.split(","):
        if item.strip() == "product":
            out.append((LORA_LAYERS, None))
            continue
        layers, _, steps = item.strip().partition(":")
        try:
            variant = float(layers), int(steps)
        except ValueError:
            raise SystemExit(
                f"error: --variants: {item!r} is neither LAYERS:STEPS (e.g. 0.3:30) nor product"
            ) from None
        if not (0 < variant[0] <= 1 and variant[1] > 0):
            raise SystemExit(f"error: --variants: {item!r}: LAYERS in (0, 1], STEPS at least 1")
        out.append(variant)
    return out


def _triple(interval) -> list[float] | None:
    return (
        None if interval is None else [round(v, 3) for v in (interval.estimate, interval.low, interval.high)]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reward_gold", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", type=Path, help="a loop run's directory (default: the newest)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PLAYGROUND_DATA_DIR", "data")),
        help="where the loop keeps its runs (DATA_DIR/loop/runs)",
    )
    p.add_argument(
        "--variants",
        default="0.3:30,1.0:30,0.3:90,1.0:90",
        help="comma-separated LAYERS:STEPS, or product, to train",
    )
    p.add_argument("--heldout", type=float, default=0.3, help="share of the prompt groups held out")
    p.add_argument("--split-seed", type=int, default=0, help="another seed: another train/held-out split")
    p.add_argument("--max-train-pairs", type=int, default=None, help="at most this many training pairs")
    p.add_argument("--max-length", type=int, default=None, help="tokens (default: the run's reward setting)")
    args, applied = quick.parse(p, QUICK, argv)
    if applied:
        quick.calm_threads(applied)
    variants = parse_variants(args.variants)
    scratch = tempfile.TemporaryDirectory(prefix="reward-gold-")
    if args.quick and args.run_dir is None:
        run_dir = quick_run(Path(scratch.name), quick.hf_cache())
        applied["run_dir"] = "a small one of its own"
    else:
        run_dir = args.run_dir or newest_run(args.data_dir)
    config_path = run_dir / "loop_config.json"
    if not config_path.is_file():
        raise SystemExit(f"error: {run_dir} is not a loop run (no loop_config.json)")
    loop = json.loads(config_path.read_text())

    from feedback_store import datasets as ds
    from feedback_store.store import FeedbackStore
    from models.embedded import embedded_model_path
    from models.hf_base import ensure_hf_base
    from simulation.oracles import make_oracle
    from simulation.tasks import is_heldout, prompt_set
    from trainers.data import dedupe, one_pair_per_vote
    from trainers.gate import bootstrap_mean
    from trainers.reward import RewardModel, RewardTrainConfig, train_reward_model

    oracle = make_oracle(loop["oracle"])
    tasks = prompt_set(oracle.prompt_set)
    by_prompt = {t.prompt: t for t in (*tasks.train, *tasks.heldout)}
    store = FeedbackStore(run_dir / "playground.db")
    try:
        pairs = [x for x in dedupe(ds.preference_pairs(store)) if x.source != "ai"]
    finally:
        store.close()

    def task_of(pair):
        return by_prompt.get(next((m["content"] for m in reversed(pair.prompt) if m["role"] == "user"), ""))

    unknown = sum(task_of(x) is None for x in pairs)
    pairs = [x for x in pairs if task_of(x) is not None]  # a prompt the oracle's set lacks has no gold

    salt = "reward-gold" if args.split_seed == 0 else f"reward-gold:{args.split_seed}"  # seed 0: docs' split
    held_out = [is_heldout(task_of(x).split_key, args.heldout, salt) for x in pairs]
    train = [x for x, out in zip(pairs, held_out, strict=True) if not out]
    held = one_pair_per_vote([x for x, out in zip(pairs, held_out, strict=True) if out])
    if args.max_train_pairs:
        train = train[: args.max_train_pairs]
    gold_gap = [oracle.score(task_of(x), x.chosen) - oracle.score(task_of(x), x.rejected) for x in held]
    if not train or not held:
        raise SystemExit(f"error: {len(train)} training and {len(held)} held-out pairs in {run_dir}")
    ceiling = bootstrap_mean([float(g > 0) for g in gold_gap if g != 0])
    reward = {**loop.get("reward_overrides", {}), "threads": loop.get("threads")}
    if args.max_length:
        reward["max_length"] = args.max_length
    print(
        f"run {run_dir.name} (oracle {oracle.name}): {len(train)} training and {len(held)} held-out pairs "
        f"(split seed {args.split_seed})"
        + (f"; {unknown} pairs on prompts outside the oracle's set left out" if unknown else "")
    )
    print(
        f"the users' labels agree with gold on {ceiling.text() if ceiling else 'none'} of the held-out pairs"
    )
    print(f"reward model as the run's cycle trains it: {reward}")
    print(
        f"{'layers':>6} {'steps':>5} {'vs labels [95%]':>20} {'vs gold [95%]':>20} "
        f"{'gold vs first [95%]':>22} {'seconds':>8}"
    )

    base_dir = ensure_hf_base(embedded_model_path(), loop.get("hf_cache") or args.data_dir / "hf-base")
    rows = []
    first_gold: list[float] | None = (
        None  # the first variant's per-pair gold hits: the others' paired baseline
    )
    with scratch:
        for layers, steps in variants:
            t0 = time.perf_counter()
            cfg = RewardTrainConfig(
                output_dir=f"{scratch.name}/adapters/{layers}-{steps}",
                base_model_dir=str(base_dir),
                **(
                    {**reward, "lora_layers": layers, "max_steps": steps}
                    if steps
                    else {"lora_layers": layers, "threads": reward["threads"]}
                ),
            )
            result = train_reward_model(cfg, train)
            seconds = time.perf_counter() - t0
            scorer = RewardModel.load(result.adapter_dir, base_dir, cfg.max_length)
            chosen = scorer.score([x.prompt for x in held], [x.chosen for x in held])
            rejected = scorer.score([x.prompt for x in held], [x.rejected for x in held])
            labels = bootstrap_mean([float(c > r) for c, r in zip(chosen, rejected, strict=True)])
            hits = [
                float((c > r) == (g > 0))
                for c, r, g in zip(chosen, rejected, gold_gap, strict=True)
                if g != 0
            ]
            gold = bootstrap_mean(hits)
            if first_gold is None:
                first_gold = hits
            gain = bootstrap_mean([h - f for h, f in zip(hits, first_gold, strict=True)]) if rows else None
            print(
                f"{layers:>6} {steps or 'epoch':>5} {labels.text():>20} {gold.text() if gold else '-':>20} "
                f"{gain.text() if gain else '-':>22} {seconds:>8.0f}",
                flush=True,
            )
            rows.append(
                {
                    "layers": layers,
                    "steps": steps,
                    "accuracy_labels": _triple(labels),
                    "accuracy_gold": _triple(gold),
                    "gold_gain_vs_first": _triple(gain),
                    "seconds": round(seconds, 1),
                }
            )
    quick.announce(applied, args.quick)
    summary = {
        "run": run_dir.name,
        "oracle": oracle.name,
        "train_pairs": len(train),
        "heldout_pairs": len(held),
        "labels_agree_with_gold": round(ceiling.estimate, 3) if ceiling else None,
        "rows": rows,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
