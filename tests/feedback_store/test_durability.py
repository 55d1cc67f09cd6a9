"""Durability: many concurrent writers, the writing process killed (SIGKILL) mid-run, and every write
that was acknowledged is still there, exactly once, after a restart. Once through the store API in
a writer process (thousands of writes a second), once through the real server's feedback endpoint."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from feedback_store.store import AssistantTurn, FeedbackStore
from tests.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.slow


def seed_replies(path, n: int) -> list[int]:
    store = FeedbackStore(path)
    try:
        version = store.versions.ensure_base("durability.gguf").id
        conv = store.create_conversation("seed")
        prompt = store.add_message(conv, "user", "Rate me.")
        return [
            store.add_assistant_message(
                conv, prompt, AssistantTurn(content=f"reply {i}", model_version_id=version)
            )
            for i in range(n)
        ]
    finally:
        store.close()


def check_acknowledged(path, acks: dict[tuple[int, str], int]) -> None:
    """Every acknowledged (reply, user) row is stored once, with the last acknowledged score."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT message_id, user_id, score FROM feedback").fetchall()
    finally:
        db.close()
    stored: dict[tuple[int, str], int] = {}
    for message_id, user, score in rows:
        assert (message_id, user) not in stored, "duplicated row"
        stored[(message_id, user)] = score
    missing = [key for key in acks if key not in stored]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    assert all(stored[key] == score for key, score in acks.items())


def test_store_writer_process_killed_mid_run_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "durable.db"
    seed_replies(path, 200)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.feedback_store.durability_writer", str(path), "8"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acks: dict[tuple[int, str], int] = {}
    try:
        for line in proc.stdout:
            _, message_id, user, score = line.split()
            acks[(int(message_id), user)] = int(score)
            if len(acks) >= 3000:
                break
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: 8 threads are inside transactions right now
        proc.wait(10)
        for line in proc.stdout:  # acknowledgements already printed before the kill count too
            parts = line.split()
            if len(parts) == 4:
                acks[(int(parts[1]), parts[2])] = int(parts[3])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert len(acks) >= 3000
    FeedbackStore(path).close()  # "restart": open, recover the WAL, migrate
    check_acknowledged(path, acks)


def test_server_killed_mid_run_loses_no_acknowledged_feedback(tmp_path):
    from gradio_client import Client

    data_dir = tmp_path / "server"
    data_dir.mkdir()
    replies = seed_replies(data_dir / "playground.db", 400)
    server = ServerProcess(data_dir).wait_ready()
    acks: dict[tuple[int, str], int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        client = Client(server.url, verbose=False)
        for i, message_id in enumerate(replies):
            if stop.is_set():
                return
            score = 1 + (i + k) % 7
            try:
                got = client.predict(
                    message_id=message_id,
                    thumbs=1 if i % 2 else -1,
                    reasons=[],
                    score=score,
                    api_name="/rate_reply",
                )
            except Exception as exc:  # the server was killed: this write was never acknowledged
                errors.append(exc)
                return
            with lock:
                acks[(got["message_id"], got["user_id"])] = score

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acks) < 150 and time.monotonic() < deadline and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        assert len(acks) >= 150, f"only {len(acks)} writes acknowledged; errors: {errors[:3]}"
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            acknowledged = dict(acks)
    finally:
        server.stop()
    assert len({user for _, user in acknowledged}) == 8  # eight clients, eight anonymous users
    restarted = ServerProcess(data_dir).wait_ready()  # the server comes back on the same database
    try:
        check_acknowledged(data_dir / "playground.db", acknowledged)
    finally:
        restarted.stop()
