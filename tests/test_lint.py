"""The code base stays ruff-clean (lint rules in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if not ruff:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers_hold():
    """The contracts in pyproject.toml: commands > playground | trainers > settings > models |
    feedback_store, and nothing imports benchmarks (a broken one names the offending import)."""
    tool = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if not tool:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    r = subprocess.run([tool, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout
