"""``python launch.py train`` refusing what it cannot do, with what to do instead.

Both training modes as documented (``train --cycle`` storing the scheduler's configuration, decision,
reasons and stage times; ``train --method`` registering a candidate) run in
tests/test_documented_commands.py, which checks what they stored (``check_training_stored``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def train(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_without_a_mode_or_data_says_what_to_do(tmp_path):
    r = train("--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "--method METHOD, or --cycle" in r.stderr
    r = train("--method", "dpo", "--data-dir", str(tmp_path), timeout=300)
    assert r.returncode == 3 and "not enough data" in r.stderr and "Traceback" not in r.stderr
    r = train("--method", "nonsense", "--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "--method" in r.stderr and "Traceback" not in r.stderr
