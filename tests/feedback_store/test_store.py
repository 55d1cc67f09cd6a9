import sqlite3
import threading

import pytest

from feedback_store.db import open_database
from feedback_store.migrations import MIGRATIONS
from feedback_store.store import AssistantTurn, FeedbackStore, StoreError


def test_migrations_are_idempotent(tmp_path):
    path = tmp_path / "m.db"
    FeedbackStore(path).close()
    db = open_database(path)
    applied = [m.name for m in MIGRATIONS.applied(db)]
    schema = db.schema
    MIGRATIONS.apply(db)  # again: nothing pending, nothing changes
    FeedbackStore(path).close()  # and again through the store
    assert [m.name for m in MIGRATIONS.applied(db)] == applied
    assert db.schema == schema
    assert MIGRATIONS.pending(db) == []
    assert {"conversations", "messages", "model_versions"} <= set(db.table_names())


def test_connection_pragmas(store):
    db = store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_base_version_is_version_one_and_deployed(store):
    v = store.versions.ensure_base("SmolLM2.gguf", name="SmolLM2 (base)")
    assert v.id == 1 and v.status == "deployed" and v.adapter_path is None
    assert store.versions.ensure_base("SmolLM2.gguf").id == 1  # found, not duplicated
    assert store.versions.deployed("SmolLM2.gguf").id == 1
    other = store.versions.ensure_base("vicuna.gguf")
    assert other.id == 2 and other.status == "deployed"  # one deployed version per base model


def test_only_one_deployed_version_per_base(store):
    store.versions.ensure_base("m.gguf")
    with pytest.raises(sqlite3.IntegrityError), store.write() as db:
        db.execute(
            "INSERT INTO model_versions (name, base_model, status, created_at) VALUES ('x', 'm.gguf', 'deployed', 'now')"
        )


def test_turn_round_trips_with_all_fields(store):
    version = store.versions.ensure_base("m.gguf")
    conv = store.create_conversation("alice", system_prompt="Be brief.")
    user_id = store.add_message(conv, "user", "What is the capital of France? ü 日本")
    turn = AssistantTurn(
        content="Paris.",
        model_version_id=version.id,
        params={"temperature": 0.0, "top_p": 0.95, "stop": ["\n"]},
        prompt="<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        prompt_tokens=17,
        completion_tokens=3,
        ttft_ms=81.5,
        tokens_per_s=84.2,
        total_ms=120.0,
        finish_reason="stop",
        preset_id="zero_shot",
        moderation={"flagged": False},
        trace=[{"step": "answer"}],
    )
    reply_id = store.add_assistant_message(conv, user_id, turn)
    got = store.get_message(reply_id)
    assert got.role == "assistant" and got.parent_id == user_id and got.conversation_id == conv
    for name in (
        "content",
        "model_version_id",
        "params",
        "prompt",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tokens_per_s",
        "total_ms",
        "finish_reason",
        "preset_id",
        "moderation",
        "trace",
    ):
        assert getattr(got, name) == getattr(turn, name), name
    assert got.created_at.endswith("+00:00")
    assert [m.id for m in store.conversation_messages(conv)] == [user_id, reply_id]
    assert store.get_message(user_id).content == "What is the capital of France? ü 日本"
    assert store.get_conversation(conv)["system_prompt"] == "Be brief."


def test_foreign_keys_are_enforced(store):
    with pytest.raises(StoreError, match="unknown conversation"):
        store.add_message("no-such-conversation", "user", "hi")
    conv = store.create_conversation("bob")
    with pytest.raises(StoreError):
        store.add_message(conv, "user", "hi", parent_id=999)
    with pytest.raises(StoreError, match="role"):
        store.add_message(conv, "robot", "hi")
    assert store.count("messages") == 0  # nothing half-written


def test_concurrent_writers_lose_nothing(store):
    conv = store.create_conversation("load")
    errors = []

    def writer(k):
        try:
            for i in range(100):
                store.add_message(conv, "user", f"{k}-{i}")
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    contents = {m.content for m in store.conversation_messages(conv)}
    assert len(contents) == 800


def test_unknown_ids_give_clear_errors(store):
    with pytest.raises(StoreError, match="No message 42"):
        store.get_message(42)
    with pytest.raises(StoreError, match="No model version 7"):
        store.versions.get(7)
