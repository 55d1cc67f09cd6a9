"""Every benchmark has ``--quick`` and is documented (so the documented-commands test runs it quick);
the shared helper lets a typed flag win over the quick value."""

from __future__ import annotations

import argparse

from benchmarks import quick
from tests.conftest import ROOT

HELPERS = {"__init__", "quick", "gradio_chat"}  # modules of benchmarks/ that are not benchmarks
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in HELPERS)


def test_the_benchmark_list_is_what_the_folder_holds():
    assert {"serving", "startup", "presets", "store", "training", "cycle", "lora_export", "moderation",
            "ratelimit", "hostile_inputs", "loop"} <= set(BENCHMARKS)  # fmt: skip


def test_a_typed_flag_wins_over_the_quick_value():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    quick.add_quick_flag(p)
    argv = ["--quick", "--rounds=3"]
    args = p.parse_args(argv)
    applied = quick.apply_quick(p, args, {"rounds": 1, "max_tokens": 16, "extra": True}, argv)
    assert (args.rounds, args.max_tokens, args.extra) == (3, 16, True)
    assert applied == {"max_tokens": 16, "extra": True}
    assert "max-tokens=16" in quick.banner(applied) and "not a measurement" in quick.banner(applied)
    full = p.parse_args(["--max-tokens", "8"])
    assert quick.apply_quick(p, full, {"max_tokens": 16}, ["--max-tokens", "8"]) == {}
    assert full.max_tokens == 8


def test_every_benchmark_is_documented_so_ci_runs_it_quick():
    """tests/test_documented_commands.py runs every documented command, a benchmark with --quick (and
    checks the banner, the JSON last line and that ./data stays untouched): so each must be documented."""
    from tests.test_documented_commands import COMMANDS

    documented = {
        c.split()[2].removeprefix("benchmarks.") for _, c in COMMANDS if c.startswith("python -m benchmarks.")
    }
    assert set(BENCHMARKS) <= documented, f"undocumented benchmarks: {sorted(set(BENCHMARKS) - documented)}"


def test_a_capped_size_stays_quick_even_when_typed_larger():
    """A documented full-size command (``--rounds 3``) run with --quick must stay a smoke test."""
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    quick.add_quick_flag(p)
    argv = ["--quick", "--rounds", "3"]
    args = p.parse_args(argv)
    applied = quick.apply_quick(p, args, {"rounds": 1}, argv, caps=("rounds",))
    assert args.rounds == 1 and applied == {"rounds": "1 (asked 3)"}
    smaller = p.parse_args(["--quick", "--rounds", "0"])
    assert quick.apply_quick(p, smaller, {"rounds": 1}, ["--quick", "--rounds", "0"], caps=("rounds",)) == {}
    assert smaller.rounds == 0
