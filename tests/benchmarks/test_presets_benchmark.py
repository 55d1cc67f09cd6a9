"""The preset benchmark's task set and answer checks, and one quick real run of the script."""

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from benchmarks.presets import check_answer, limit_tasks, load_tasks, stated_number
from tests.conftest import ROOT


def test_task_set_is_complete_and_well_formed():
    tasks = load_tasks()
    kinds = [t["kind"] for t in tasks]
    assert (kinds.count("arithmetic"), kinds.count("factual"), kinds.count("tool")) == (15, 15, 6)
    assert len({t["id"] for t in tasks}) == len(tasks)
    assert {t["tool"] for t in tasks if t["kind"] == "tool"} == {"calculator", "search", "clock"}
    assert [t["kind"] for t in limit_tasks(tasks, 1)] == ["arithmetic", "factual", "tool"]


@pytest.mark.parametrize(
    ("answer", "expected", "ok"),
    [
        ("12 - 2 = 10. The answer is 10.", 10, True),
        ("The answer is 1,048,576.", 1048576, True),
        ("She has 12, uses 3, so 9 remain", 9, True),
        ("The answer is 10 apples, from 12.", 12, False),
        ("I don't know.", 4, False),
    ],
)
def test_numeric_answers(answer, expected, ok):
    assert check_answer({"check": "number", "answer": expected}, answer) is ok


def test_text_answers_match_whole_words_only():
    task = {"check": "text", "answer": ["8", "eight"]}
    assert check_answer(task, "A spider has eight legs.")
    assert check_answer(task, "8 legs")
    assert not check_answer(task, "18 legs")
    assert not check_answer({"check": "text", "answer": ["Au"]}, "Gold is beautiful")
    assert check_answer({"check": "text", "answer": ["carbon dioxide"]}, "Plants absorb Carbon Dioxide.")


def test_current_year_and_stated_numbers():
    now = datetime(2031, 5, 1, tzinfo=UTC)
    assert check_answer({"check": "current_year"}, "It is 2031.", now)
    assert not check_answer({"check": "current_year"}, "It is 20315.", now)
    assert stated_number("Canberra") is None and stated_number("The answer is 7.") == 7.0


@pytest.mark.slow
def test_the_benchmark_runs_and_ends_with_a_json_line():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.presets",
            "--limit",
            "1",
            "--presets",
            "plain,few-shot",
            "--max-new-tokens",
            "48",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"plain", "few-shot"} and all(0 <= v <= 1 for v in result.values())
    assert any(line.startswith("preset") and "accuracy" in line for line in lines)
    assert "arith-01" in r.stderr  # one line per run, as it goes
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks.presets", "--presets", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown preset(s) nope" in bad.stderr
