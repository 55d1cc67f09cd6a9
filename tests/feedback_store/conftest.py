"""A small stored conversation tree to give feedback on (real SQLite file, real store API)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from feedback_store.store import AssistantTurn, FeedbackStore


@dataclass
class Tree:
    """conv: system "Be brief." / u1 "Hi" / r1 "Hello!" / u2 "Capital of France?" / replies[0..4]
    (siblings under u2, from versions v1 and v2); r1b is a retry sibling of r1 that must never leak
    into u2's context."""

    store: FeedbackStore
    v1: int
    v2: int
    conversation_id: str
    u1: int
    r1: int
    r1b: int
    u2: int
    replies: list[int]


def reply(store: FeedbackStore, conv: str, parent: int, text: str, version: int, **extra) -> int:
    return store.add_assistant_message(
        conv,
        parent,
        AssistantTurn(content=text, model_version_id=version, params=extra.pop("params", None), **extra),
    )


def make_tree(store: FeedbackStore) -> Tree:
    v1 = store.versions.ensure_base("m.gguf", name="base").id
    with store.write() as db:
        v2 = db.execute(
            "INSERT INTO model_versions (name, base_model, adapter_path, status, created_at) "
            "VALUES ('dpo-1', 'm.gguf', '/a', 'candidate', '2026-01-01')"
        ).lastrowid
    conv = store.create_conversation("alice", system_prompt="Be brief.")
    u1 = store.add_message(conv, "user", "Hi")
    r1 = reply(store, conv, u1, "Hello!", v1)
    r1b = reply(store, conv, u1, "Hey there (a retry)", v1)
    u2 = store.add_message(conv, "user", "Capital of France?", parent_id=r1)
    texts = ["Paris.", "It is Paris, the capital.", "Lyon.", "I cannot answer that.", "Paris!"]
    replies = [
        reply(store, conv, u2, t, v1 if i % 2 == 0 else v2, params={"temperature": 0.7, "seed": i})
        for i, t in enumerate(texts)
    ]
    return Tree(store, v1, v2, conv, u1, r1, r1b, u2, replies)


@pytest.fixture
def tree(store) -> Tree:
    return make_tree(store)
