"""The OpenAI-compatible judge for RLAIF pairs: how its answers are read and combined over both orders,
the constitution file, the API key kept out of the stored config, and a real judge: the playground's own
``/v1`` (a separate server process with the embedded model, which enforces the verdict's JSON schema)
labelling pairs into a real SQLite file."""

from __future__ import annotations

import json

import pytest

from feedback_store import datasets as ds
from tests.conftest import ServerProcess, free_port
from tests.trainers.test_ai_labels import chat, result
from trainers.ai_judge import KEY_ENV, Verdict, combine, constitution_id, parse_answer, read_constitution
from trainers.ai_labels import JUDGE_USER, _judge_pairs
from trainers.cycle import CycleConfig


def test_answers_are_read_leniently_and_refused_when_they_name_no_reply():
    assert parse_answer('{"reason": "shorter", "better": "B"}') == ("B", "shorter")
    assert parse_answer('Sure! {"better": " a ", "reason": 3} Hope that helps.') == ("A", "3")
    for bad in ("A", '{"better": "C"}', '{"better": "A"', "[1, 2]", '{"reason": "no verdict"}'):
        assert parse_answer(bad) is None, bad


def test_a_label_needs_both_orders_to_agree():
    a, b = ("A", "first"), ("B", "second")
    assert combine(a, b) == Verdict(0, "agreed", ("first", "second"))  # A in order, B when swapped: reply 0
    assert combine(b, a).better == 1
    assert combine(a, a) == Verdict(None, "disagreed", ("first", "first"))  # always "A": position bias
    assert combine(None, b) == Verdict(None, "unparsed", ("second",))


def test_the_constitution_file(tmp_path):
    assert "harmless" in read_constitution(None)  # the shipped one
    own = tmp_path / "rules.txt"
    own.write_text("Prefer the shorter reply.\n")
    assert read_constitution(own) == "Prefer the shorter reply."
    own.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        read_constitution(own)
    with pytest.raises(ValueError, match="cannot read"):
        read_constitution(tmp_path / "missing.txt")


def test_the_judges_key_is_never_written_with_the_config(tmp_path, monkeypatch):
    config = CycleConfig(
        db_path=tmp_path / "p.db", data_dir=tmp_path, ai_judge="http://x/v1", ai_judge_api_key="sk-1"
    )
    stored = json.dumps(config.to_dict())
    assert "sk-1" not in stored and "sk-1" not in repr(config)
    monkeypatch.setenv(KEY_ENV, "sk-1")  # the scheduler passes it in the training process's environment
    assert CycleConfig.from_dict(json.loads(stored)).ai_judge_api_key == "sk-1"


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("judge"), "--concurrency", "1")
    yield server.wait_ready()
    server.stop()


def test_a_real_judge_labels_pairs_in_the_store(judge_server, store, tmp_path):
    base = store.versions.ensure_base("m.gguf").id
    questions = {
        "What is the capital of France?": ("Paris.", "I like turtles."),
        "What is 2 + 2?": ("Bananas are yellow.", "2 + 2 is 4."),
        "Name a primary colour.": ("Red.", "Red."),  # identical replies: nothing to judge
    }
    for i, q in enumerate(questions):
        chat(store, f"u{i}", q, base)
    records = sorted(ds.unrated_prompts(store, limit=5), key=lambda r: r.prompt[-1]["content"])
    replies = [[result(t) for t in questions[r.prompt[-1]["content"]]] for r in records]
    constitution = tmp_path / "c.txt"
    constitution.write_text("Prefer the reply that answers the question correctly.")
    config = CycleConfig(
        db_path=store.path, data_dir=tmp_path, ai_judge=judge_server.url, ai_constitution=str(constitution)
    )

    counts = _judge_pairs(config, store, records, replies, base, lambda m, f: None)

    # the server enforces the schema, so every answer parses; each judged pair is decided or not
    assert counts["ai_judge_unparsed"] == 0
    assert counts["ai_pairs"] + counts["ai_judge_disagreed"] == 2
    pairs = ds.preference_pairs(store)
    assert len(pairs) == counts["ai_pairs"]
    for pair in pairs:
        assert (pair.source, pair.user_id) == ("ai", JUDGE_USER)
        assert {pair.chosen, pair.rejected} in (
            {"Paris.", "I like turtles."},
            {"Bananas are yellow.", "2 + 2 is 4."},
        )
    for row in store.db.query("SELECT differed FROM comparisons WHERE mode = 'ai'"):
        label = json.loads(row["differed"])
        assert label["labeler"] == "judge" and "/v1#" in label["judge"]  # the server and its model
        assert len(label["reasons"]) == 2
        assert label["constitution"] == constitution_id(
            "Prefer the reply that answers the question correctly."
        )


def test_an_unreachable_judge_labels_nothing_and_the_cycle_goes_on(store, tmp_path):
    base = store.versions.ensure_base("m.gguf").id
    chat(store, "ann", "What is 2 + 2?", base)
    records = ds.unrated_prompts(store, limit=5)
    config = CycleConfig(db_path=store.path, data_dir=tmp_path, ai_judge=f"http://127.0.0.1:{free_port()}/v1")
    said = []
    counts = _judge_pairs(
        config, store, records, [[result("4."), result("5.")]], base, lambda m, f: said.append(m)
    )
    assert counts["ai_pairs"] == 0 and "cannot reach" in counts["ai_judge_error"]
    assert ds.preference_pairs(store) == [] and any("no AI pairs" in m for m in said)
