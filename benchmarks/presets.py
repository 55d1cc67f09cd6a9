"""Every prompt preset on a small bundled task set, with the embedded model (or ``--model``).

    python -m benchmarks.presets                      # all presets, all 36 tasks
    python -m benchmarks.presets --limit 2 --presets plain,react   # a quick run: 2 tasks of each kind
    python -m benchmarks.presets --model path/to/bigger.gguf --gpu-layers -1
    python -m benchmarks.presets --quick              # a smoke run: 1 tool task, 24-token replies

Tasks (``benchmarks/tasks/preset_tasks.jsonl``, written for this project): arithmetic word problems
with numeric answers, factual questions with accepted answers, and questions that need a tool
(calculator, knowledge-base search, clock). Answers are checked against the final answer text: the
number it states (numeric tolerance) or an accepted string as a whole word.

Prints accuracy (overall and per kind), mean model calls and mean latency per preset; the last line
is a JSON object mapping preset -> accuracy. Sampling is greedy with a fixed seed, except where a
preset sets its own temperature (self-consistency samples at 0.7 with seeds 0..4).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import ROOT, quick

# One tool task: it reaches the tools through ReAct, and the long tool prompts make each task cost
# seconds per preset (a ReAct run re-reads its growing prompt at every step).
QUICK = {"kinds": "tool", "limit": 1, "cap_new_tokens": 24}
TASKS = ROOT / "benchmarks" / "tasks" / "preset_tasks.jsonl"
KINDS = ("arithmetic", "factual", "tool")
_PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def load_tasks(path: Path = TASKS) -> list[dict[str, Any]]:
    tasks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        task = json.loads(line)
        if task.get("check") not in ("number", "text", "current_year") or task.get("kind") not in KINDS:
            raise ValueError(f"{path}:{number}: bad task {task.get('id')!r}")
        tasks.append(task)
    return tasks


def limit_tasks(tasks: list[dict[str, Any]], per_kind: int | None) -> list[dict[str, Any]]:
    if per_kind is None:
        return tasks
    counts: dict[str, int] = {}
    kept = []
    for task in tasks:
        counts[task["kind"]] = counts.get(task["kind"], 0) + 1
        if counts[task["kind"]] <= per_kind:
            kept.append(task)
    return kept


def stated_number(answer: str) -> float | None:
    """The number an answer states (the first after "the answer is", else the last one)."""
    from playground.presets.answers import answer_key

    key = answer_key(answer)
    return float(key) if _PLAIN_NUMBER.match(key) else None


def check_answer(task: dict[str, Any], answer: str, now: datetime | None = None) -> bool:
    if task["check"] == "number":
        value = stated_number(answer)
        return value is not None and abs(value - float(task["answer"])) <= float(task.get("tolerance", 1e-6))
    if task["check"] == "current_year":
        year = (now or datetime.now(UTC)).year
        return re.search(rf"(?<!\d){year}(?!\d)", answer) is not None
    return any(
        re.search(rf"(?<!\w){re.escape(accepted)}(?!\w)", answer, re.IGNORECASE)
        for accepted in task["answer"]
    )


def run_benchmark(
    service,
    presets: dict,
    tasks: list[dict[str, Any]],
    tools,
    *,
    seed: int = 0,
    max_new_tokens: int = 256,
    cap_new_tokens: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every preset on every task; ``cap_new_tokens`` also caps the presets' own reply lengths."""
    from dataclasses import replace

    from models.base import SamplingParams
    from playground.presets import run_preset

    base = SamplingParams(temperature=0.0, seed=seed, max_new_tokens=max_new_tokens)
    report: dict[str, dict[str, Any]] = {}
    for preset in presets.values():
        rows = []
        for task in tasks:
            messages = [{"role": "user", "content": task["question"]}]
            params = preset.sampling(base)
            if cap_new_tokens is not None:
                params = replace(params, max_new_tokens=min(params.max_new_tokens, cap_new_tokens))
            run = run_preset(preset, messages, params, service, tools=tools)
            error = None
            try:
                run.wait()
            except Exception as exc:  # counted as wrong, and shown
                error = str(exc)
            ok = error is None and check_answer(task, run.answer)
            rows.append(
                {
                    "task": task["id"],
                    "kind": task["kind"],
                    "ok": ok,
                    "calls": run.model_calls,
                    "latency_s": run.elapsed_s or 0.0,
                    "answer": run.answer,
                    "error": error,
                }
            )
            print(
                f"  {preset.id:<20} {task['id']:<9} {'ok ' if ok else 'bad'} {run.model_calls:>2} calls "
                f"{run.elapsed_s or 0:6.1f} s  {' '.join(run.answer.split())[:70]!r}",
                file=sys.stderr,
                flush=True,
            )
        report[preset.id] = summarise(rows)
    return report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind = {}
    for kind in KINDS:
        kind_rows = [r for r in rows if r["kind"] == kind]
        if kind_rows:
            by_kind[kind] = sum(r["ok"] for r in kind_rows) / len(kind_rows)
    return {
        "accuracy": sum(r["ok"] for r in rows) / len(rows) if rows else 0.0,
        "by_kind": by_kind,
        "mean_calls": statistics.mean(r["calls"] for r in rows) if rows else 0.0,
        "mean_latency_s": statistics.mean(r["latency_s"] for r in rows) if rows else 0.0,
        "errors": sum(r["error"] is not None for r in rows),
        "n": len(rows),
        "rows": rows,
    }


def print_table(report: dict[str, dict[str, Any]]) -> None:
    header = f"{'preset':<22}{'accuracy':>9}{'arith':>8}{'fact':>8}{'tool':>8}{'calls':>8}{'latency s':>11}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for preset_id, r in report.items():
        kinds = [r["by_kind"].get(k) for k in KINDS]
        kind_cells = "".join(f"{'-' if v is None else f'{v:.2f}':>8}" for v in kinds)
        print(
            f"{preset_id:<22}{r['accuracy']:>9.2f}{kind_cells}{r['mean_calls']:>8.2f}"
            f"{r['mean_latency_s']:>11.2f}{r['errors']:>8d}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", help="comma-separated preset ids (default: all built-in presets)")
    ap.add_argument("--limit", type=int, help="at most N tasks of each kind (quick runs)")
    ap.add_argument("--kinds", help=f"comma-separated task kinds (default all: {','.join(KINDS)})")
    ap.add_argument("--model", help="a GGUF file (default: the embedded SmolLM2-135M Q4_1)")
    ap.add_argument("--chat-template", default="auto")
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--threads", type=int, help="threads per model instance (default cores / concurrency)")
    ap.add_argument(
        "--concurrency", type=int, default=2, help="model instances (self-consistency samples in parallel)"
    )
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument(
        "--cap-new-tokens", type=int, help="cap every reply, the presets' own lengths too (default: no cap)"
    )
    ap.add_argument("--tasks", type=Path, default=TASKS)
    ap.add_argument("--details", type=Path, help="write every run (answer, calls, latency) to this JSON file")
    args, applied = quick.parse(ap, QUICK, argv)

    sys.path.insert(0, str(ROOT))
    from models.loader import load_chat_model
    from models.service import ModelService
    from playground.presets import load_presets
    from playground.tools import default_tools
    from playground.tools.knowledge import KnowledgeBase

    presets = load_presets()
    if args.presets:
        wanted = [p.strip() for p in args.presets.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in presets]
        if unknown:
            ap.error(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(presets)}")
        presets = {p: presets[p] for p in wanted}
    tasks = load_tasks(args.tasks)
    if args.kinds:
        kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
        if kinds - set(KINDS):
            ap.error(f"unknown kind(s) {', '.join(sorted(kinds - set(KINDS)))}; known: {', '.join(KINDS)}")
        tasks = [t for t in tasks if t["kind"] in kinds]
    tasks = limit_tasks(tasks, args.limit)
    model = load_chat_model(
        args.model,
        chat_template=args.chat_template,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        pool_size=args.concurrency,
        gpu_layers=args.gpu_layers,
    )
    service = ModelService(model, 1, model.display_name)
    with tempfile.TemporaryDirectory(prefix="bench-kb-") as tmp:
        knowledge = KnowledgeBase(Path(tmp) / "knowledge.db")
        knowledge.refresh()
        t0 = time.perf_counter()
        try:
            report = run_benchmark(
                service,
                presets,
                tasks,
                default_tools(knowledge),
                seed=args.seed,
                max_new_tokens=args.max_new_tokens,
                cap_new_tokens=args.cap_new_tokens,
            )
        finally:
            model.close()
    print(
        f"\nmodel {model.display_name}; {len(tasks)} tasks x {len(presets)} presets in "
        f"{time.perf_counter() - t0:.0f} s; accuracy = share of tasks answered correctly"
    )
    print_table(report)
    quick.announce(applied, args.quick)
    if args.details:
        args.details.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({preset_id: round(r["accuracy"], 4) for preset_id, r in report.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
