"""`python launch.py versions | deploy | rollback` on a real database file, as a user runs them."""

import subprocess
import sys

from feedback_store.store import FeedbackStore
from tests.conftest import ROOT


def launch(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_list_deploy_and_roll_back(tmp_path):
    db = tmp_path / "p.db"
    store = FeedbackStore(db)
    base = store.versions.ensure_base("m.gguf", name="m (base)")
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"GGUF")
    cand = store.versions.register_candidate(
        "m.gguf", gguf_adapter_path=adapter, method="dpo", metrics={"win": 0.6}
    )
    store.close()

    listed = launch("versions", "--db", str(db))
    assert listed.returncode == 0
    assert "# m.gguf" in listed.stdout and "candidate" in listed.stdout and '{"win": 0.6}' in listed.stdout
    assert launch("deploy", str(cand.id), "--db", str(db)).returncode == 0
    assert launch("versions", "--db", str(db), "--json").stdout.count('"deployed"') == 1
    back = launch("rollback", "--db", str(db))  # no id: the previously deployed version
    assert back.returncode == 0 and f"version {base.id}" in back.stdout
    store = FeedbackStore(db)
    try:
        assert store.versions.deployed_id("m.gguf") == base.id
    finally:
        store.close()


def test_errors_are_messages_not_tracebacks(tmp_path):
    r = launch("rollback", "7", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "no database" in r.stderr and "Traceback" not in r.stderr
    db = tmp_path / "p.db"
    FeedbackStore(db).close()
    r = launch("deploy", "42", "--db", str(db))
    assert r.returncode == 2 and "No model version 42" in r.stderr and "Traceback" not in r.stderr
