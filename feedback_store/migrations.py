"""Schema of the feedback database, as an ordered list of sqlite-utils migrations.

Each step runs in its own transaction (a failing step rolls back and stays pending) and is recorded in
``_sqlite_migrations``; ``apply`` is idempotent. Never edit a step that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite3

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


@MIGRATIONS()
def m_feedback_001(db: sqlite_utils.Database) -> None:
    for statement in _M_FEEDBACK_001:
        db.execute(statement)


# Feedback on stored replies (feedback_store/feedback.py writes these, feedback_store/datasets.py reads
# them). Every row is keyed so that a repeated or double-fired UI event updates it instead of adding one.
_M_FEEDBACK_001 = [
    # One row per (reply, user): thumbs, reasons, the InstructGPT 1-7 score and flags, a note.
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        thumbs INTEGER CHECK (thumbs IN (-1, 1)),
        reasons TEXT NOT NULL DEFAULT '[]',
        score INTEGER CHECK (score BETWEEN 1 AND 7),
        flags TEXT NOT NULL DEFAULT '[]',
        note TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (message_id, user_id)
    )
    """,
    "CREATE INDEX idx_feedback_updated ON feedback(updated_at)",
    # A user's own better answer to a stored reply: an SFT demonstration and a preference pair.
    """
    CREATE TABLE demonstrations (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (message_id, user_id)
    )
    """,
    "CREATE INDEX idx_demonstrations_updated ON demonstrations(updated_at)",
    # A vote between two replies to the same prompt (Compare tab, or an imported chosen/rejected pair).
    """
    CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        message_a INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        message_b INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        vote TEXT NOT NULL CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
        mode TEXT NOT NULL,
        label_a TEXT,
        label_b TEXT,
        anonymous INTEGER NOT NULL DEFAULT 1 CHECK (anonymous IN (0, 1)),
        differed TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        CHECK (message_a <> message_b),
        UNIQUE (message_a, message_b, user_id)
    )
    """,
    "CREATE INDEX idx_comparisons_updated ON comparisons(updated_at)",
    "CREATE INDEX idx_comparisons_b ON comparisons(message_b)",
    # K replies to one prompt ordered best to worst; item_key (the sorted message ids) makes ranking the
    # same replies again an update, not a second ranking.
    """
    CREATE TABLE rankings (
        id INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL,
        prompt_message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
        k INTEGER NOT NULL CHECK (k BETWEEN 2 AND 9),
        item_key TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (item_key, user_id)
    )
    """,
    "CREATE INDEX idx_rankings_updated ON rankings(updated_at)",
    """
    CREATE TABLE ranking_items (
        ranking_id INTEGER NOT NULL REFERENCES rankings(id) ON DELETE CASCADE,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        position INTEGER NOT NULL CHECK (position >= 1),
        PRIMARY KEY (ranking_id, position),
        UNIQUE (ranking_id, message_id)
    )
    """,
    "CREATE INDEX idx_ranking_items_message ON ranking_items(message_id)",
]


@MIGRATIONS()
def m_training_001(db: sqlite_utils.Database) -> None:
    for statement in _M_TRAINING_001:
        db.execute(statement)


_M_TRAINING_001 = [
    # One training cycle (or one manual training command): its stages, progress, outcome and the gate's
    # decision with its reasons. A row left 'running' by a killed process is marked 'killed' later (its
    # pid is gone).
    """
    CREATE TABLE training_runs (
        id INTEGER PRIMARY KEY,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'succeeded', 'failed', 'killed')),
        stage TEXT NOT NULL DEFAULT 'starting',
        progress REAL NOT NULL DEFAULT 0,
        message TEXT,
        pid INTEGER,
        config TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        stage_seconds TEXT NOT NULL DEFAULT '{}',
        candidate_version_id INTEGER REFERENCES model_versions(id),
        decision TEXT CHECK (decision IN ('deployed', 'awaiting_approval', 'rejected', 'no_candidate')),
        reasons TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        log_path TEXT,
        feedback_seen INTEGER,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT
    )
    """,
    "CREATE INDEX idx_training_runs_started ON training_runs(started_at)",
    # At most one cycle at a time, across processes: the database refuses a second running row.
    "CREATE UNIQUE INDEX idx_training_runs_one_running ON training_runs(status) WHERE status = 'running'",
    # Every deploy, rollback, rejection and approval, with who or what decided it and why.
    """
    CREATE TABLE deployment_events (
        id INTEGER PRIMARY KEY,
        version_id INTEGER NOT NULL REFERENCES model_versions(id),
        action TEXT NOT NULL CHECK (action IN ('deploy', 'rollback', 'reject', 'approve')),
        actor TEXT NOT NULL,
        training_run_id INTEGER REFERENCES training_runs(id),
        reasons TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_deployment_events_version ON deployment_events(version_id, created_at)",
]


@MIGRATIONS()
def m_safety_001(db: sqlite_utils.Database) -> None:
    for statement in _M_SAFETY_001:
        db.execute(statement)


# Safety of a shared playground (feedback_store/hygiene.py writes and reads these). A message's own
# moderation decision stays in messages.moderation (JSON, "flagged" true/false); the index finds the
# flagged ones for the training-data filters.
_M_SAFETY_001 = [
    "CREATE INDEX idx_messages_flagged ON messages(id) WHERE json_extract(moderation, '$.flagged') = 1",
    # Users telling the filter it was wrong: a flagged message that was fine (false_positive) or an
    # unflagged one that should have been blocked (false_negative). One report per (message, user).
    """
    CREATE TABLE moderation_reports (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('false_positive', 'false_negative')),
        categories TEXT NOT NULL DEFAULT '[]',
        note TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (message_id, user_id)
    )
    """,
    "CREATE INDEX idx_moderation_reports_kind ON moderation_reports(kind, message_id)",
    # The moderation decision on a better answer (it is SFT training text).
    """
    CREATE TABLE demonstration_moderation (
        demonstration_id INTEGER PRIMARY KEY REFERENCES demonstrations(id) ON DELETE CASCADE,
        flagged INTEGER NOT NULL CHECK (flagged IN (0, 1)),
        moderation TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    # Events that make a user's feedback suspect (rate limits hit, ...), per user and client address.
    """
    CREATE TABLE safety_events (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        user_id TEXT NOT NULL,
        client_ip TEXT,
        scope TEXT,
        detail TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_safety_events_user ON safety_events(user_id, kind)",
    # An operator's decision about a user: excluded from training (1) or trusted despite the automatic
    # rules (0).
    """
    CREATE TABLE user_flags (
        user_id TEXT PRIMARY KEY,
        excluded INTEGER NOT NULL CHECK (excluded IN (0, 1)),
        reason TEXT,
        set_by TEXT,
        updated_at TEXT NOT NULL
    )
    """,
]


@MIGRATIONS()
def m_history_001(db: sqlite_utils.Database) -> None:
    for statement in _M_HISTORY_001:
        db.execute(statement)


# Conversations people come back to (feedback_store/conversations.py reads and writes these): a title
# the user may set (NULL: the first message is the title), the time of the last message (the history
# lists newest activity first; retention deletes by it), and a record of deletions without content.
_M_HISTORY_001 = [
    "ALTER TABLE conversations ADD COLUMN title TEXT",
    "ALTER TABLE conversations ADD COLUMN updated_at TEXT",
    """
    UPDATE conversations SET updated_at = COALESCE(
        (SELECT MAX(m.created_at) FROM messages m WHERE m.conversation_id = conversations.id), created_at)
    """,
    # Triggers rather than code in add_message: every path that inserts rows (the importer writes SQL
    # of its own) keeps updated_at right.
    """
    CREATE TRIGGER conversations_created AFTER INSERT ON conversations WHEN NEW.updated_at IS NULL
    BEGIN
        UPDATE conversations SET updated_at = NEW.created_at WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER conversations_touched AFTER INSERT ON messages
    BEGIN
        UPDATE conversations SET updated_at = NEW.created_at WHERE id = NEW.conversation_id;
    END
    """,
    "CREATE INDEX idx_conversations_user_recent ON conversations(user_id, source, updated_at)",
    "CREATE INDEX idx_conversations_updated ON conversations(updated_at)",
    # Deleting everything of one user looks rows up by user.
    "CREATE INDEX idx_feedback_user ON feedback(user_id)",
    "CREATE INDEX idx_demonstrations_user ON demonstrations(user_id)",
    "CREATE INDEX idx_comparisons_user ON comparisons(user_id)",
    "CREATE INDEX idx_rankings_user ON rankings(user_id)",
    "CREATE INDEX idx_moderation_reports_user ON moderation_reports(user_id)",
    # One row per deletion and owner: who asked (the user, an admin, "retention"), whose data, and how
    # many rows of each kind went. No ids of what was deleted and no text. ``flagged`` (in counts) keeps
    # the number of the owner's flagged messages, so deleting them does not undo a hygiene exclusion.
    """
    CREATE TABLE deletion_events (
        id INTEGER PRIMARY KEY,
        actor TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('conversation', 'user', 'retention')),
        user_id TEXT,
        counts TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_deletion_events_user ON deletion_events(user_id)",
]


@MIGRATIONS()
def m_labels_001(db: sqlite_utils.Database) -> None:
    for statement in _M_LABELS_001:
        db.execute(statement)


# Labels that act (feedback_store/feedback.py, hygiene.py and datasets.py read these):
# - rankings with ties: ``position`` stays the unique display order (best first) and ``rank`` is the
#   rank given, equal for tied replies (1 = best). Rows written before this step rank by position.
# - the admin's decision on the reports about one message (the review queue): accepted (the proposed
#   rules-file change was written), confirmed (the report is right, the rules are unchanged) or rejected
#   (the report is wrong). A decided message leaves the queue; later reports on it do not bring it back.
_M_LABELS_001 = [
    "ALTER TABLE ranking_items ADD COLUMN rank INTEGER CHECK (rank IS NULL OR rank >= 1)",
    "UPDATE ranking_items SET rank = position WHERE rank IS NULL",
    """
    CREATE TABLE moderation_reviews (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('false_positive', 'false_negative')),
        decision TEXT NOT NULL CHECK (decision IN ('accepted', 'confirmed', 'rejected')),
        change TEXT NOT NULL DEFAULT '{}',
        diff TEXT,
        decided_by TEXT NOT NULL,
        decided_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_moderation_reviews_decision ON moderation_reviews(kind, decision)",
]


@MIGRATIONS(transactional=False)
def m_training_002(db: sqlite_utils.Database) -> None:
    """The gate may also leave a candidate undecided (it needs more evidence)."""
    _widen_decisions(
        db,
        "decision IN ('deployed', 'awaiting_approval', 'rejected', 'no_candidate')",
        "decision IN ('deployed', 'awaiting_approval', 'rejected', 'undecided', 'no_candidate')",
    )


@MIGRATIONS(transactional=False)
def m_canary_001(db: sqlite_utils.Database) -> None:
    """Canary battles (feedback_store/canary.py): a candidate the gate did not reject may be put before
    the users in a share of the Compare tab's anonymous battles; its run's decision is "canary" until
    the votes (or the budget) decide. At most one canary is live, enforced by a unique index. Its votes
    are the canary-mode comparisons with an id above ``after_comparison`` (the newest when it started)."""
    _widen_decisions(
        db,
        "decision IN ('deployed', 'awaiting_approval', 'rejected', 'undecided', 'no_candidate')",
        "decision IN ('deployed', 'awaiting_approval', 'rejected', 'undecided', 'canary', 'no_candidate')",
    )
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS canaries (
            id INTEGER PRIMARY KEY,
            candidate_id INTEGER NOT NULL REFERENCES model_versions(id),
            deployed_id INTEGER NOT NULL REFERENCES model_versions(id),
            training_run_id INTEGER REFERENCES training_runs(id),
            after_comparison INTEGER NOT NULL DEFAULT 0,
            share REAL NOT NULL CHECK (share > 0 AND share <= 1),
            max_votes INTEGER NOT NULL CHECK (max_votes >= 1),
            per_user INTEGER NOT NULL CHECK (per_user >= 1),
            alpha REAL NOT NULL CHECK (alpha > 0 AND alpha < 1),
            fallback TEXT NOT NULL CHECK (fallback IN ('deploy', 'undecided')),
            auto_deploy INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('live', 'ended')),
            decision TEXT CHECK (decision IN
                ('deployed', 'rejected', 'undecided', 'awaiting_approval', 'cancelled')),
            reasons TEXT NOT NULL DEFAULT '[]',
            tally TEXT NOT NULL DEFAULT '{}',
            started_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            ended_at TEXT
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS idx_canaries_one_live ON canaries(status) WHERE status = 'live'"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_comparisons_mode ON comparisons(mode, id)")


def _widen_decisions(db: sqlite_utils.Database, old: str, new: str) -> None:
    """Replace the CHECK constraint ``old`` of ``training_runs.decision`` by ``new``. SQLite cannot
    change a CHECK constraint in place, so the table is rebuilt with the same rows, the way SQLite
    documents it: foreign keys off (only possible outside a transaction, hence steps of their own), then
    one transaction that builds, copies, drops, renames and checks the foreign keys before committing.
    Running it again after a crash is harmless: the new constraint is already there or nothing was
    committed."""
    schema = next(db.query("SELECT sql FROM sqlite_master WHERE name = 'training_runs'"))["sql"]
    if old not in schema:
        return
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(schema.replace(old, new).replace("training_runs", "training_runs_new", 1))
            db.execute("INSERT INTO training_runs_new SELECT * FROM training_runs")
            db.execute("DROP TABLE training_runs")
            db.execute("ALTER TABLE training_runs_new RENAME TO training_runs")
            db.execute("CREATE INDEX idx_training_runs_started ON training_runs(started_at)")
            db.execute(
                "CREATE UNIQUE INDEX idx_training_runs_one_running ON training_runs(status) "
                "WHERE status = 'running'"
            )
            if list(db.query("PRAGMA foreign_key_check")):
                raise sqlite3.IntegrityError("training_runs rebuild left dangling foreign keys")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.execute("PRAGMA foreign_keys = ON")
