"""`python launch.py presets`: list what the server would offer; `presets check` names bad fields."""

import subprocess
import sys

from settings import Settings
from tests.conftest import ROOT


def launch(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "presets", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_and_check(tmp_path):
    r = launch("--data-dir", str(tmp_path))
    assert r.returncode == 0 and "self-consistency" in r.stdout and "built-in" in r.stdout
    assert len(r.stdout.strip().splitlines()) == 8

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mine.toml").write_text('name = "Mine"\ntechnique = "zero_shot"\n')
    (presets / "bad.toml").write_text('name = "Bad"\ntechnique = "few_shot"\n[params]\ntop_p = 2\n')
    r = launch("--data-dir", str(tmp_path))
    assert r.returncode == 1 and "mine" in r.stdout and "bad.toml: params.top_p" in r.stderr

    r = launch("check", str(presets / "bad.toml"), str(ROOT / "playground/presets/builtin/react.toml"))
    assert r.returncode == 1 and "params.top_p: Input should be less than or equal to 1" in r.stderr
    assert "ok: " in r.stdout and "react" in r.stdout


def test_default_folders_live_in_the_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.presets_path == tmp_path / "presets" and s.knowledge_path == tmp_path / "knowledge"
    assert s.knowledge_db_path == tmp_path / "knowledge.db"
    assert Settings(data_dir=tmp_path, presets_dir=tmp_path / "p").presets_path == tmp_path / "p"
