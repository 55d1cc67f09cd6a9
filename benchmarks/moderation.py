"""Precision and recall of the moderators on the small labelled set ``benchmarks/tasks/moderation.jsonl``.

    python -m benchmarks.moderation                 # the rule-based moderator, dev and test splits
    python -m benchmarks.moderation --judge         # also the model judge (the embedded model; slow)
    python -m benchmarks.moderation --errors        # list every wrong decision
    python -m benchmarks.moderation --quick         # a smoke run (with --judge: 4 rows per split)

Each row is a user input or a model output with its true categories ([] = acceptable). The ``dev``
rows were used while writing the rules; the ``test`` rows were written at the same time and held out,
so the test figures are the honest ones. Per category: precision = flagged correctly / flagged,
recall = flagged correctly / truly in the category; "any" counts a row as flagged or not, whatever the
category. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from benchmarks import quick
from playground.moderation.base import Moderator
from playground.moderation.rules import RuleModerator

SET = "moderation.jsonl"


def load_set(path: Path | None = None) -> list[dict]:
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files("benchmarks").joinpath("tasks", SET).read_text(encoding="utf-8")
    )
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


def evaluate(moderator: Moderator, rows: Sequence[dict]) -> dict:
    """Per category and for "any": tp, fp, fn, precision, recall; plus the wrong rows."""
    counts: dict[str, dict[str, int]] = {}
    errors = []
    t0 = time.perf_counter()
    for row in rows:
        result = moderator.moderate(row["text"], kind=row.get("kind", "input"))
        truth, said = set(row["labels"]), set(result.categories)
        if result.flagged and not said:
            said = {"unsafe"}
        judged = said if moderator.name == "rules" else said
        for cat in truth | judged:
            c = counts.setdefault(cat, {"tp": 0, "fp": 0, "fn": 0})
            if cat in truth and cat in judged:
                c["tp"] += 1
            elif cat in judged:
                c["fp"] += 1
            else:
                c["fn"] += 1
        any_c = counts.setdefault("any", {"tp": 0, "fp": 0, "fn": 0})
        if truth and result.flagged:
            any_c["tp"] += 1
        elif result.flagged:
            any_c["fp"] += 1
        elif truth:
            any_c["fn"] += 1
        if truth != said:
            errors.append(
                {
                    "text": row["text"],
                    "kind": row.get("kind", "input"),
                    "truth": sorted(truth),
                    "said": sorted(said),
                }
            )
    elapsed = time.perf_counter() - t0
    out = {}
    for cat, c in sorted(counts.items()):
        out[cat] = {
            **c,
            "precision": _ratio(c["tp"], c["tp"] + c["fp"]),
            "recall": _ratio(c["tp"], c["tp"] + c["fn"]),
        }
    return {
        "rows": len(rows),
        "ms_per_text": 1000 * elapsed / max(1, len(rows)),
        "by_category": out,
        "errors": errors,
    }


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


def print_table(title: str, report: dict) -> None:
    print(f"\n{title}: {report['rows']} texts, {report['ms_per_text']:.2f} ms per text")
    print(f"  {'category':<18} {'tp':>4} {'fp':>4} {'fn':>4}  precision  recall")
    for cat, c in report["by_category"].items():
        if cat == "any":
            continue
        print(
            f"  {cat:<18} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4}  {_fmt(c['precision'])}      {_fmt(c['recall'])}"
        )
    c = report["by_category"].get("any")
    if c:
        print(
            f"  {'any (flagged?)':<18} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4}  {_fmt(c['precision'])}      {_fmt(c['recall'])}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", type=Path, help="another labelled JSONL file (text, labels, kind, split)")
    p.add_argument("--rules", type=Path, help="your moderation file, merged into the built-in rules")
    p.add_argument("--judge", action="store_true", help="also evaluate the model judge (embedded model)")
    p.add_argument("--errors", action="store_true", help="print every wrong decision")
    p.add_argument("--judge-rows", type=int, help="the judge sees at most N rows of each split")
    quick.add_quick_flag(p)
    args = p.parse_args(argv)
    # The rules take milliseconds for the whole set; only the model judge needs cutting down.
    applied = quick.apply_quick(p, args, {"judge_rows": 4} if args.judge else {}, argv)
    quick.announce(applied, args.quick)
    rows = load_set(args.set)
    moderators: list[Moderator] = [RuleModerator.from_files(args.rules)]
    closers = []
    if args.judge:
        from models.embedded import embedded_model_path
        from models.llamacpp import LlamaCppChatModel
        from models.service import ModelService
        from playground.moderation.judge import ModelJudge

        model = LlamaCppChatModel(embedded_model_path(), pool_size=1)
        closers.append(model.close)
        moderators.append(ModelJudge(ModelService(model, 1, "base")))
    summary: dict = {}
    try:
        for moderator in moderators:
            for split in sorted({r.get("split", "all") for r in rows}):
                split_rows = [r for r in rows if r.get("split", "all") == split]
                if moderator.name != "rules" and args.judge_rows is not None:
                    split_rows = split_rows[: args.judge_rows]
                report = evaluate(moderator, split_rows)
                print_table(f"{moderator.name} on the {split} split", report)
                if args.errors:
                    for e in report["errors"]:
                        print(f"    {e['kind']:<6} truth={e['truth']} said={e['said']}: {e['text'][:100]!r}")
                summary[f"{moderator.name}/{split}"] = {
                    cat: {"precision": c["precision"], "recall": c["recall"]}
                    for cat, c in report["by_category"].items()
                }
    finally:
        for close in closers:
            close()
    quick.announce(applied, args.quick)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
