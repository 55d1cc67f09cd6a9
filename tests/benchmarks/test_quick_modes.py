"""Every benchmark has ``--quick``: it exits 0, says it is a quick run, and ends with a JSON object; and
the shared helper lets a typed flag win over the quick value."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pytest

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


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_exits_0_and_ends_with_a_json_object(name, tmp_path):
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PLAYGROUND_DATA_DIR", None)  # a quick run must pick its own temporary directory
    before = set((ROOT / "data").iterdir()) if (ROOT / "data").is_dir() else set()
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - t0
    print(f"benchmarks.{name} --quick: {wall:.1f} s")
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    lines = r.stdout.strip().splitlines()
    assert isinstance(json.loads(lines[-1]), dict)
    assert "QUICK RUN" in lines[-2]  # beside the figures, so a quick figure is never quoted as real
    after = set((ROOT / "data").iterdir()) if (ROOT / "data").is_dir() else set()
    assert after == before, f"a quick run wrote into ./data: {sorted(map(str, after - before))}"
