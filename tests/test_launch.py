"""launch.py as a user runs it: clear errors for bad models, a clear message for an offline --share."""

import subprocess
import sys
import time

from tests.conftest import ROOT


def run_launch(*args, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--no-open-browser", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_model_path_is_a_clear_error_not_a_traceback(tmp_path):
    r = run_launch("--model", str(tmp_path / "nope.gguf"), "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "no such file" in r.stderr and "Traceback" not in r.stderr


def test_broken_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_text("this is not a model")
    r = run_launch("--model", str(bad), "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "not a GGUF file" in r.stderr and "Traceback" not in r.stderr


def test_share_offline_keeps_serving_locally(server_factory):
    server = server_factory("--share", "--public")
    # the page answers while launch() is still trying to open the tunnel: wait for its verdict
    deadline = time.monotonic() + 60
    while not any(s in server.log() for s in ("Could not create a public share link", "Public link:")):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert server.proc.poll() is None  # still serving
