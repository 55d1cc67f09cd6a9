"""The schema step that lets a training run end "undecided": an existing database keeps its runs and
the deployment events that point at them."""

from __future__ import annotations

import sqlite3

import pytest

from feedback_store.db import open_database
from feedback_store.migrations import MIGRATIONS
from feedback_store.store import FeedbackStore


def test_an_existing_database_gains_the_undecided_decision_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    db = open_database(path)
    MIGRATIONS.apply(db, stop_before="m_training_002")  # the schema as it shipped before
    db.execute(
        "INSERT INTO model_versions (id, name, base_model, status, created_at) VALUES (1, 'base', 'm', 'deployed', 't')"
    )
    db.execute(
        "INSERT INTO training_runs (id, trigger, status, decision, started_at, updated_at) "
        "VALUES (5, 'cli', 'succeeded', 'rejected', 't', 't')"
    )
    db.execute(
        "INSERT INTO deployment_events (version_id, action, actor, training_run_id, created_at) "
        "VALUES (1, 'reject', 'gate', 5, 't')"
    )
    db.conn.commit()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE training_runs SET decision = 'undecided' WHERE id = 5")
    db.conn.rollback()
    db.conn.close()

    store = FeedbackStore(path)  # applies the pending step
    try:
        assert store.runs.get(5).decision == "rejected"
        assert store.runs.events()[0]["training_run_id"] == 5
        run = store.runs.start("test")
        assert store.runs.finish(run.id, "succeeded", decision="undecided").decision == "undecided"
        with pytest.raises(sqlite3.IntegrityError):  # other decisions are still refused
            store.db.execute("UPDATE training_runs SET decision = 'maybe' WHERE id = 5")
        assert list(store.db.query("PRAGMA foreign_key_check")) == []
    finally:
        store.close()
