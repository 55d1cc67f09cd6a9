"""Schema of the feedback database, as an ordered list of sqlite-utils migrations.

Each step runs in its own transaction (a failing step rolls back and stays pending) and is recorded in
``_sqlite_migrations``; ``apply`` is idempotent. Never edit a step that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite_utils

MIGRATIONS = sqlite_utils.Migrations("feedback_store")


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    for statement in _M001:
        db.execute(statement)


_M001 = [
    # A served model version: the base model (adapter_path NULL) or base + a LoRA adapter.
    """
    CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        base_model TEXT NOT NULL,
        adapter_path TEXT,
        gguf_adapter_path TEXT,
        parent_id INTEGER REFERENCES model_versions(id),
        training_run_id INTEGER,
        method TEXT,
        status TEXT NOT NULL DEFAULT 'candidate'
            CHECK (status IN ('candidate', 'deployed', 'retired', 'rejected')),
        metrics TEXT NOT NULL DEFAULT '{}',
        notes TEXT,
        created_at TEXT NOT NULL,
        deployed_at TEXT
    )
    """,
    "CREATE INDEX idx_model_versions_base ON model_versions(base_model, status)",
    # Exactly one deployed version per served base model, enforced by the database itself.
    """
    CREATE UNIQUE INDEX idx_model_versions_one_deployed
        ON model_versions(base_model) WHERE status = 'deployed'
    """,
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'ui',
        system_prompt TEXT,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_conversations_user ON conversations(user_id, created_at)",
    # Messages form a tree through parent_id: a retry is a sibling assistant reply under the same user
    # message, an edit is a sibling user message. Assistant rows carry everything needed to reproduce
    # and to learn from them.
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES messages(id),
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        model_version_id INTEGER REFERENCES model_versions(id),
        preset_id TEXT,
        params TEXT,
        prompt TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        ttft_ms REAL,
        tokens_per_s REAL,
        total_ms REAL,
        finish_reason TEXT,
        moderation TEXT,
        trace TEXT,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_messages_conversation ON messages(conversation_id, id)",
    "CREATE INDEX idx_messages_parent ON messages(parent_id)",
    "CREATE INDEX idx_messages_version ON messages(model_version_id, created_at)",
]
