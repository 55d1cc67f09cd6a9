"""Each user's conversations (``store.conversations``): the history listing and search, ownership
checks that answer a forged id as an unknown one, the hard delete and what it takes with it (feedback,
training datasets, exports, the run copies, the file's free pages), "delete all my data", "my data",
retention (also as the scheduler applies it), and the migration that added all this."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from feedback_store import datasets, exports
from feedback_store.conversations import ConversationNotFound
from feedback_store.db import open_database
from feedback_store.migrations import MIGRATIONS
from feedback_store.store import AssistantTurn, FeedbackStore, StoreError
from tests.feedback_store.conftest import reply

SECRET = "my-private-words-4711"  # distinctive: a leftover copy anywhere cannot hide


def chat(store: FeedbackStore, user: str, text: str, answer: str, *, source: str = "ui", version=None):
    version = version or store.versions.ensure_base("m.gguf", name="base").id
    conv = store.create_conversation(user, source=source)
    u = store.add_message(conv, "user", text)
    r = store.add_assistant_message(conv, u, AssistantTurn(content=answer, model_version_id=version))
    return conv, u, r


def all_texts(store: FeedbackStore, tmp_path) -> str:
    """Every export the store makes, concatenated (what an admin could download)."""
    out = []
    for fmt in exports.FORMATS:
        path = tmp_path / f"all.{fmt}.jsonl"
        exports.export(store, fmt, path)
        out.append(path.read_text())
    return "\n".join(out)


def training_texts(store: FeedbackStore) -> str:
    """What the next training cycle would read, as text."""
    parts = [
        *(p.to_trl() for p in datasets.preference_pairs(store)),
        *(u.to_trl() for u in datasets.unpaired_feedback(store)),
        *(d.to_trl() for d in datasets.demonstrations(store)),
        *(p.to_trl() for p in datasets.prompts(store)),
    ]
    return json.dumps(parts)


# -- the migration -----------------------------------------------------------------------------------
def test_migration_backfills_last_activity_and_triggers_keep_it(tmp_path):
    db = open_database(tmp_path / "old.db")
    MIGRATIONS.apply(db, stop_before="m_history_001")  # a database from before the history existed
    db.execute(
        "INSERT INTO conversations (id, user_id, source, created_at) VALUES ('c1', 'alice', 'ui', '2026-01-01')"
    )
    db.execute(
        "INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', 'user', 'hi', '2026-01-05')"
    )
    db.execute(
        "INSERT INTO conversations (id, user_id, source, created_at) VALUES ('c2', 'alice', 'ui', '2026-02-01')"
    )
    db.conn.commit()
    db.close()
    store = FeedbackStore(tmp_path / "old.db")
    try:
        rows = dict(store.db.execute("SELECT id, updated_at FROM conversations").fetchall())
        assert rows == {"c1": "2026-01-05", "c2": "2026-02-01"}  # the last message, else the creation
        assert {"deletion_events"} <= set(store.db.table_names())
        assert "title" in store.db["conversations"].columns_dict
        store.add_message("c1", "user", "again")  # the trigger moves it to now
        assert store.get_conversation("c1")["updated_at"] > "2026-12"
        fresh = store.create_conversation("bob")  # and a new one starts at its creation time
        assert store.get_conversation(fresh)["updated_at"] == store.get_conversation(fresh)["created_at"]
        indexes = {i.name for i in store.db["conversations"].indexes}
        assert {"idx_conversations_user_recent", "idx_conversations_updated"} <= indexes
        MIGRATIONS.apply(store.db)  # idempotent
    finally:
        store.close()


# -- listing ------------------------------------------------------------------------------------------
def test_history_lists_own_chats_newest_activity_first_with_title_date_and_version(store):
    base = store.versions.ensure_base("m.gguf", name="base").id
    old, u_old, _ = chat(store, "alice", "  First   question\nabout Paris  ", "Paris.", version=base)
    time.sleep(0.002)
    new, _, _ = chat(store, "alice", "Second question", "Rome.", version=base)
    chat(store, "bob", "Bob's question about Paris", "Yes.")
    chat(store, "alice", "A compare round", "A.", source="compare")  # not a chat to resume
    store.create_conversation("alice")  # never got a message: nothing to show
    listed = store.conversations.list_for_user("alice")
    assert [s.id for s in listed] == [new, old]
    assert listed[1].title == "First question about Paris" and not listed[1].custom_title
    assert (listed[1].messages, listed[1].version_id, listed[1].version_name) == (2, base, "base")
    assert store.conversations.count_for_user("alice") == 2
    time.sleep(0.002)
    store.add_message(old, "user", "A follow-up", parent_id=u_old)  # resuming moves it up
    assert [s.id for s in store.conversations.list_for_user("alice")] == [old, new]
    assert store.conversations.list_for_user("alice", limit=1)[0].id == old
    assert store.conversations.list_for_user("nobody") == []


def test_search_matches_titles_and_any_message_of_the_user_only(store):
    paris, _, _ = chat(store, "alice", "Capital of France?", "It is PARIS.")
    rome, _, _ = chat(store, "alice", "Capital of Italy?", "Rome.")
    chat(store, "bob", "Paris trip", "Nice.")
    assert [s.id for s in store.conversations.list_for_user("alice", search="paris")] == [paris]
    assert store.conversations.rename(rome, "alice", "  Trip   planning ") == "Trip planning"
    assert [s.id for s in store.conversations.list_for_user("alice", search="TRIP")] == [rome]
    assert store.conversations.list_for_user("alice", search="%") == []  # no wildcards
    assert store.conversations.list_for_user("alice", search="'; DROP TABLE messages; --") == []
    assert store.count("messages") == 6


def test_rename_and_back_to_the_first_message(store):
    conv, _, _ = chat(store, "alice", "What is 2+2?", "4")
    assert store.conversations.rename(conv, "alice", "Arithmetic") == "Arithmetic"
    [summary] = store.conversations.list_for_user("alice")
    assert summary.title == "Arithmetic" and summary.custom_title
    assert store.conversations.rename(conv, "alice", "   ") == "What is 2+2?"
    with pytest.raises(StoreError, match="at most 200"):
        store.conversations.rename(conv, "alice", "x" * 201)


def test_open_returns_every_branch(tree):
    s = tree.store
    opened = s.conversations.open(tree.conversation_id, "alice")
    ids = [m.id for m in opened.messages]
    assert ids == sorted(ids) and tree.r1b in ids and set(tree.replies) <= set(ids)
    assert opened.system_prompt == "Be brief." and opened.summary.title == "Hi"


def test_another_users_or_a_forged_id_answers_as_an_unknown_one(store):
    alice, _, alice_reply = chat(store, "alice", SECRET, "ok")
    store.feedback.record_feedback(alice_reply, "alice", thumbs=1)
    answers = set()
    for user, conv in [
        ("bob", alice),  # someone else's real id
        ("alice", uuid.uuid4().hex),  # a well-formed id that does not exist
        ("alice", alice.upper()),
        ("alice", "' OR 1=1 --"),
        ("alice", 123),
        ("alice", None),
        ("alice", "x" * 10_000),
    ]:
        for call in (
            lambda c=conv, u=user: store.conversations.open(c, u),
            lambda c=conv, u=user: store.conversations.summary(c, u),
            lambda c=conv, u=user: store.conversations.rename(c, u, "mine now"),
            lambda c=conv, u=user: store.conversations.delete(c, u),
        ):
            with pytest.raises(ConversationNotFound) as info:
                call()
            answers.add(str(info.value))
    assert len(answers) == 1  # one answer for all: nothing to learn about other users' ids
    assert store.conversations.open(alice, "alice").messages[0].content == SECRET
    assert store.conversations.list_for_user("alice")[0].title == SECRET  # not renamed
    assert store.count("feedback") == 1 and store.conversations.deletion_events() == []


# -- deleting -----------------------------------------------------------------------------------------
def give_every_kind_of_feedback(tree):
    """alice rates her own conversation every way there is; bob too (through the API one can)."""
    s, r = tree.store, tree.replies
    s.feedback.record_feedback(r[0], "alice", thumbs=1, note="nice")
    s.feedback.record_feedback(r[2], "bob", thumbs=-1)
    demo = s.feedback.add_demonstration(r[3], "alice", f"{SECRET} better")
    s.hygiene.set_demonstration_moderation(demo.id, {"flagged": False})
    s.feedback.record_comparison(r[0], r[1], "alice", "a", mode="samples")
    s.feedback.record_ranking([r[4], r[0], r[2]], "alice")
    s.hygiene.record_report(r[1], "alice", "false_negative")


def test_delete_takes_the_conversation_and_all_feedback_on_it_out_of_everything(tree, tmp_path):
    s = tree.store
    s.add_message(tree.conversation_id, "user", SECRET, parent_id=tree.replies[0])
    give_every_kind_of_feedback(tree)
    bob, _, bob_reply = chat(s, "bob", "Bob asks", "Bob's answer")
    s.feedback.record_feedback(bob_reply, "bob", thumbs=1)
    s.feedback.record_feedback(bob_reply, "alice", thumbs=-1)  # alice's rating of bob's reply stays
    assert SECRET in training_texts(s) and SECRET in all_texts(s, tmp_path)
    assert datasets.preference_pairs(s) and datasets.unpaired_feedback(s)

    runs = tmp_path / "runs" / "run-1"  # the copies a training cycle keeps beside its run
    runs.mkdir(parents=True)
    for name, items in (
        ("preferences", datasets.preference_pairs(s)),
        ("kto", datasets.unpaired_feedback(s)),
        ("sft", datasets.demonstrations(s)),
    ):
        (runs / f"{name}.jsonl").write_text("".join(json.dumps(i.to_trl()) + "\n" for i in items))
    kto_before = (runs / "kto.jsonl").read_text().count("\n")

    done = s.conversations.delete(tree.conversation_id, "alice", scrub_dirs=[tmp_path / "runs"])
    assert (done.conversations, done.messages) == (1, 10)
    assert (done.feedback, done.demonstrations, done.comparisons, done.rankings, done.reports) == (
        2,
        1,
        1,
        1,
        1,
    )
    assert done.scrubbed_lines >= 5

    # The store: no row of the conversation, no feedback on it, bob's own conversation untouched.
    assert (
        s.db.execute(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", [tree.conversation_id]
        ).fetchone()[0]
        == 0
    )
    for table in (
        "feedback",
        "demonstrations",
        "comparisons",
        "rankings",
        "ranking_items",
        "moderation_reports",
    ):
        rows = s.db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 (a constant)
        assert all(bob_reply in row for row in rows) if table == "feedback" else rows == [], table
    assert {(f.user_id, f.message_id) for f in s.feedback.list_feedback()} == {
        ("bob", bob_reply),
        ("alice", bob_reply),
    }
    assert s.conversations.list_for_user("bob")[0].id == bob
    # Training data and every export, from this moment on.
    assert SECRET not in training_texts(s) and SECRET not in all_texts(s, tmp_path)
    assert "Capital of France" not in training_texts(s)
    assert [u.message_id for u in datasets.unpaired_feedback(s)] == [bob_reply, bob_reply]
    assert datasets.preference_pairs(s) == [] and datasets.demonstrations(s) == []
    # The run copies: the lines holding deleted text are gone, the rest kept.
    for name in ("preferences", "kto", "sft"):
        assert SECRET not in (runs / f"{name}.jsonl").read_text()
        assert "Capital of France" not in (runs / f"{name}.jsonl").read_text()
    assert (runs / "kto.jsonl").read_text().count("\n") == kto_before - 2
    # The event: who, when, how many; no text and no id of what went.
    [event] = s.conversations.deletion_events()
    assert (event.actor, event.scope, event.user_id) == ("alice", "conversation", "alice")
    assert event.counts["messages"] == 10 and event.counts["feedback"] == 2
    raw = s.db.execute("SELECT * FROM deletion_events").fetchall()
    assert SECRET not in str(raw) and tree.conversation_id not in str(raw)


def test_deleted_text_is_not_left_in_the_database_file(tmp_path):
    store = FeedbackStore(tmp_path / "p.db")
    conv, _, _ = chat(store, "alice", SECRET * 20, f"echo {SECRET}")
    chat(store, "bob", "keep me", "kept")
    store.conversations.delete(conv, "alice")
    store.close()  # the last connection checkpoints the WAL into the file
    con = sqlite3.connect(tmp_path / "p.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("p.db*"))
    assert SECRET.encode() not in blob  # secure_delete zeroed the freed cells
    assert b"keep me" in blob


def test_a_ranking_that_loses_one_of_its_replies_goes_whole(store):
    conv, u, r0 = chat(store, "alice", "Pick one", "A")
    r1 = reply(store, conv, u, "B", store.versions.ensure_base("m.gguf").id)
    other, ou, _ = chat(store, "bob", "other", "C")
    # A hand-made ranking across conversations (the Rank tab never makes one): the store must not keep
    # a ranking with a reply missing.
    store.feedback.record_ranking([r0, r1], "carol")
    with store.write() as db:
        rid = db.execute("SELECT id FROM rankings").fetchone()[0]
        db.execute("UPDATE rankings SET prompt_message_id = ? WHERE id = ?", [ou, rid])
    store.conversations.delete(conv, "alice")
    assert store.count("rankings") == 0 and store.count("ranking_items") == 0
    assert store.conversations.list_for_user("bob")[0].id == other


def test_delete_all_my_data_leaves_nothing_of_the_user_but_the_operators_records(tree, tmp_path):
    s = tree.store
    give_every_kind_of_feedback(tree)
    compare, _, _ = chat(s, "alice", f"compare {SECRET}", "A", source="compare")
    bob, _, bob_reply = chat(s, "bob", "Bob asks", "Bob's answer")
    s.feedback.record_feedback(bob_reply, "alice", thumbs=1)
    s.feedback.add_demonstration(bob_reply, "alice", f"alice writes {SECRET}")
    s.feedback.record_feedback(bob_reply, "bob", thumbs=1)
    s.hygiene.record_event("rate_limited", "alice", scope="chat")
    s.hygiene.set_user_flag("alice", excluded=True, reason="spam", set_by="admin")

    done = s.conversations.delete_user_data("alice")
    assert done.conversations == 2 and done.demonstrations == 2
    for table in (
        "conversations",
        "feedback",
        "demonstrations",
        "comparisons",
        "rankings",
        "moderation_reports",
    ):
        left = s.db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = 'alice'").fetchone()[0]  # noqa: S608 (a constant)
        assert left == 0, table
    assert SECRET not in all_texts(s, tmp_path) and SECRET not in training_texts(s)
    assert [f.user_id for f in s.feedback.list_feedback()] == ["bob"]
    assert s.conversations.list_for_user("bob")[0].id == bob
    assert list(s.conversations.user_rows("alice")) == []
    # kept, on purpose: rate-limit events and the operator's decision hold no text, and keep abuse out
    assert s.count("safety_events") == 1 and "alice" in s.hygiene.excluded_users()
    [event] = s.conversations.deletion_events(user_id="alice")
    assert event.scope == "user" and event.counts["conversations"] == 2
    with pytest.raises(ConversationNotFound):
        s.conversations.open(compare, "alice")


def test_deleting_flagged_messages_does_not_lift_a_hygiene_exclusion(store):
    convs = []
    for i in range(3):
        conv = store.create_conversation("mallory")
        store.add_message(conv, "user", f"abuse {i}", moderation={"flagged": True, "action": "marked"})
        convs.append(conv)
    assert "mallory" in store.hygiene.excluded_users()
    for conv in convs:
        store.conversations.delete(conv, "mallory")
    assert store.count("messages") == 0
    assert "mallory" in store.hygiene.excluded_users()  # the count stayed, the text went


def test_a_reader_sees_a_deletion_entirely_or_not_at_all(tree):
    s = tree.store
    give_every_kind_of_feedback(tree)
    before = datasets.preference_pairs(s)
    assert before
    with s.read():
        first = datasets.preference_pairs(s)  # a cycle's export has begun ...
        worker = threading.Thread(target=lambda: s.conversations.delete(tree.conversation_id, "alice"))
        worker.start()
        worker.join(timeout=30)  # ... a deletion commits meanwhile (WAL: the writer is not blocked)
        assert not worker.is_alive()
        second = datasets.unpaired_feedback(s)
        assert first == before and [u.message_id for u in second] == [tree.replies[0], tree.replies[2]]
    assert datasets.preference_pairs(s) == [] and datasets.unpaired_feedback(s) == []


# -- my data ------------------------------------------------------------------------------------------
def test_my_data_holds_my_conversations_and_feedback_and_nothing_of_anyone_else(tree, tmp_path):
    s = tree.store
    give_every_kind_of_feedback(tree)
    bob, _, bob_reply = chat(s, "bob", f"bob's {SECRET}", "bob's answer")
    s.feedback.record_feedback(bob_reply, "alice", thumbs=-1)  # alice's rating of bob's reply: hers
    n = s.conversations.export_user("alice", tmp_path / "mine.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "mine.jsonl").read_text().splitlines()]
    assert len(rows) == n
    kinds = [r["type"] for r in rows]
    assert kinds.count("conversation") == 1
    assert {"feedback", "better_answer", "vote", "ranking", "report"} <= set(kinds)
    [conv] = [r for r in rows if r["type"] == "conversation"]
    assert conv["id"] == tree.conversation_id and conv["system_prompt"] == "Be brief."
    assert len(conv["messages"]) == 9  # every branch: the retry r1b included
    assert {m["id"] for m in conv["messages"]} >= {tree.r1b, *tree.replies}
    assert {r["message_id"] for r in rows if r["type"] == "feedback"} == {tree.replies[0], bob_reply}
    assert all(r.get("user_id", "alice") == "alice" for r in rows)
    text = (tmp_path / "mine.jsonl").read_text()
    assert "bob's" not in text and bob not in text  # bob's words and ids stay his
    assert [r["message_ids"] for r in rows if r["type"] == "ranking"] == [
        [tree.replies[4], tree.replies[0], tree.replies[2]]
    ]


def test_my_data_keeps_a_withheld_reply_withheld(store, tmp_path):
    conv = store.create_conversation("alice")
    u = store.add_message(conv, "user", "tell me")
    withheld = {"flagged": True, "action": "withheld", "categories": ["violence"]}
    trace = [{"type": "thought", "text": "HOW-TO-HARM"}]
    store.add_assistant_message(
        conv, u, AssistantTurn(content="HOW-TO-HARM", model_version_id=None, moderation=withheld, trace=trace)
    )
    store.conversations.export_user("alice", tmp_path / "mine.jsonl")
    text = (tmp_path / "mine.jsonl").read_text()
    assert "HOW-TO-HARM" not in text and "withheld by the content filter" in text
    assert store.conversation_messages(conv)[1].content == "HOW-TO-HARM"  # kept for review


# -- retention -----------------------------------------------------------------------------------------
def age(store: FeedbackStore, conv: str, days: float) -> None:
    then = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    with store.write() as db:
        db.execute("UPDATE messages SET created_at = ? WHERE conversation_id = ?", [then, conv])
        db.execute("UPDATE conversations SET created_at = ?, updated_at = ? WHERE id = ?", [then, then, conv])


def test_retention_deletes_old_conversations_and_their_feedback_and_keeps_the_rest(store, tmp_path):
    old, _, old_reply = chat(store, "alice", f"old {SECRET}", "old answer")
    old_bob, _, _ = chat(store, "bob", "old bob", "x", source="compare")
    new, _, new_reply = chat(store, "alice", "new question", "new answer")
    store.feedback.record_feedback(old_reply, "alice", thumbs=1)
    store.feedback.record_feedback(new_reply, "alice", thumbs=-1)
    age(store, old, 40)
    age(store, old_bob, 31)
    age(store, new, 29)
    with pytest.raises(StoreError, match="positive"):
        store.conversations.delete_older_than(0)
    done = store.conversations.delete_older_than(30)
    assert (done.conversations, done.messages, done.feedback) == (2, 4, 1)
    assert [s.id for s in store.conversations.list_for_user("alice")] == [new]
    assert [u.message_id for u in datasets.unpaired_feedback(store)] == [new_reply]
    assert SECRET not in training_texts(store) and SECRET not in all_texts(store, tmp_path)
    events = store.conversations.deletion_events()
    assert {(e.actor, e.scope, e.user_id) for e in events} == {
        ("retention", "retention", "alice"),
        ("retention", "retention", "bob"),
    }
    assert store.conversations.delete_older_than(30).conversations == 0


def test_the_scheduler_applies_retention_at_start(tmp_path):
    from settings import TrainingSettings
    from trainers.cycle import CycleConfig
    from trainers.scheduler import TrainingScheduler

    store = FeedbackStore(tmp_path / "playground.db")
    old, _, _ = chat(store, "alice", f"old {SECRET}", "old answer")
    new, _, _ = chat(store, "alice", "recent", "answer")
    age(store, old, 10)
    runs = tmp_path / "runs" / "run-7"
    runs.mkdir(parents=True)
    (runs / "kto.jsonl").write_text(
        json.dumps({"prompt": [{"role": "user", "content": f"old {SECRET}"}]}) + "\n"
    )
    off = TrainingScheduler(TrainingSettings(every=0), CycleConfig(tmp_path / "playground.db", tmp_path))
    assert off.apply_retention() is None  # off by default
    off.shutdown()
    scheduler = TrainingScheduler(
        TrainingSettings(every=0, retention_days=7), CycleConfig(tmp_path / "playground.db", tmp_path)
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while store.conversations.count_for_user("alice") != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [s.id for s in store.conversations.list_for_user("alice")] == [new]
        assert (runs / "kto.jsonl").read_text() == ""
        assert scheduler._scheduler.get_job("retention").next_run_time > datetime.now(UTC) + timedelta(
            hours=23
        )
    finally:
        scheduler.shutdown()
        store.close()
