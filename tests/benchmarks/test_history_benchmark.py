"""``python -m benchmarks.history --quick`` runs, says it is quick, and ends with the JSON line whose
keys a full run has too."""

import json
import subprocess
import sys

from tests.conftest import ROOT

KEYS = {
    "conversations",
    "other_conversations",
    "messages",
    "list_rows",
    "list_median_ms",
    "list_p95_ms",
    "sidebar_median_ms",
    "sidebar_p95_ms",
    "search_rows",
    "search_median_ms",
    "search_p95_ms",
    "search_miss_median_ms",
    "open_median_ms",
    "open_p95_ms",
    "quick",
}


def test_quick_history_benchmark(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.history", "--quick", "--db", str(tmp_path / "b.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("QUICK RUN") and lines[-2].startswith("QUICK RUN")  # beside the figures
    result = json.loads(lines[-1])
    assert set(result) == KEYS and result["quick"] is True
    assert result["conversations"] == 1000 and result["list_rows"] == 50 and result["search_rows"] == 10
