"""Exports in TRL formats, imports of HH-RLHF and TRL preference files, and their round trips."""

import json
import subprocess
import sys

import pytest

from feedback_store import datasets, exports, imports
from feedback_store.store import FeedbackStore, StoreError
from launch import main as launch_main
from tests.conftest import ROOT

HH_LINES = [
    {
        "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
        "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5.",
    },
    {  # multi-turn: the shared context is three messages
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: Blue.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: I won't.",
    },
    {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: DIFFERENT\n\nAssistant: c"},
    {"chosen": "\n\nHuman: x\n\nAssistant: same", "rejected": "\n\nHuman: x\n\nAssistant: same"},
    {"chosen": "no transcript markers", "rejected": "\n\nHuman: x\n\nAssistant: y"},
    {"rejected": "\n\nHuman: x\n\nAssistant: y"},
]


def write_jsonl(path, rows, raw_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def snapshot(store):
    return {t: store.count(t) for t in ("conversations", "messages", "comparisons")}


def test_hh_rlhf_import_reports_accepted_and_rejected_rows(store, tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_LINES)
    report = imports.import_file(store, path, "hh-rlhf")
    assert report.committed and report.lines == 6 and report.accepted == 2 and report.duplicates == 0
    reasons = dict(report.rejected)
    assert set(reasons) == {3, 4, 5, 6}
    assert "differ before their last reply" in reasons[3]
    assert "identical" in reasons[4]
    assert "transcript" in reasons[5]
    assert "missing 'chosen'" in reasons[6]
    assert (
        "2 accepted" in report.summary() and "line 4: chosen and rejected are identical" in report.summary()
    )

    pairs = datasets.preference_pairs(store)
    assert [p.source for p in pairs] == ["import", "import"]
    assert pairs[1].prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    assert (pairs[1].chosen, pairs[1].rejected) == ("Blue.", "I won't.")
    assert pairs[0].user_id == "import:hh.jsonl" and pairs[0].chosen_version_id is None
    # imported prompts feed online RL too
    assert [p.prompt[-1]["content"] for p in datasets.prompts(store, sources=["import"])] == [
        "What is 2+2?",
        "Hi",
        "Name a colour.",
    ]

    again = imports.import_file(store, path, "hh-rlhf")  # the same file twice adds nothing
    assert again.committed and again.accepted == 0 and again.duplicates == 2
    assert len(datasets.preference_pairs(store)) == 2


def test_a_broken_file_changes_nothing(store, tmp_path):
    imports.import_file(store, write_jsonl(tmp_path / "ok.jsonl", HH_LINES[:1]), "hh-rlhf")
    before = snapshot(store)
    broken = write_jsonl(
        tmp_path / "broken.jsonl", HH_LINES[1:2], raw_lines=['{"chosen": "\\n\\nHuman: trunc']
    )
    report = imports.import_file(store, broken, "hh-rlhf")
    assert not report.committed and "NOTHING IMPORTED" in report.summary()
    assert report.rejected[0][0] == 2 and "not valid JSON" in report.rejected[0][1]
    assert snapshot(store) == before

    not_utf8 = tmp_path / "latin1.jsonl"
    not_utf8.write_bytes('{"chosen": "caf\xe9"}\n'.encode("latin-1"))
    assert "UTF-8" in imports.import_file(store, not_utf8, "hh-rlhf").error
    assert snapshot(store) == before

    strict = imports.import_file(
        store, write_jsonl(tmp_path / "s.jsonl", HH_LINES[1:4]), "hh-rlhf", strict=True
    )
    assert not strict.committed and "--strict" in strict.error
    assert snapshot(store) == before


def test_a_database_failure_mid_import_rolls_the_whole_file_back(store, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_LINES[:2])
    real = imports._insert_pair
    calls = []

    def fail_on_second(db, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('nope', 'user', 'x', 'now')"
            )
        return real(db, *args, **kwargs)

    monkeypatch.setattr(imports, "_insert_pair", fail_on_second)
    report = imports.import_file(store, path, "hh-rlhf")
    assert not report.committed and "FOREIGN KEY" in report.error and report.accepted == 0
    assert snapshot(store) == {"conversations": 0, "messages": 0, "comparisons": 0}


def test_trl_preference_import_explicit_and_implicit_prompts(store, tmp_path):
    rows = [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
        {
            "prompt": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Greet me"}],
            "chosen": [{"role": "assistant", "content": "Hello friend."}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        {
            "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "22"}],
        },
        {"prompt": "x", "chosen": [{"role": "user", "content": "bad"}], "rejected": "y"},
        {"chosen": "text without a prompt", "rejected": "other"},
        {"prompt": [{"role": "robot", "content": "?"}], "chosen": "a", "rejected": "b"},
    ]
    report = imports.import_file(store, write_jsonl(tmp_path / "trl.jsonl", rows), "trl-preference")
    assert report.accepted == 3 and [n for n, _ in report.rejected] == [4, 5, 6]
    pairs = {p.chosen: p for p in datasets.preference_pairs(store)}
    assert pairs["Hi!"].prompt == [{"role": "user", "content": "Say hi"}]
    assert pairs["Hello friend."].prompt == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Greet me"},
    ]
    assert (pairs["4"].prompt, pairs["4"].rejected) == ([{"role": "user", "content": "2+2?"}], "22")


def feedback_of_every_kind(tree):
    s, r = tree.store, tree.replies
    s.feedback.record_comparison(r[0], r[1], "alice", "a", mode="versions")
    s.feedback.record_comparison(r[0], r[3], "alice", "tie", mode="samples")
    s.feedback.record_ranking([r[4], r[0], r[2]], "bob")
    s.feedback.add_demonstration(r[3], "bob", "Paris is the capital of France.")
    s.feedback.record_feedback(r[0], "alice", thumbs=1, reasons=["accurate"], score=7)
    s.feedback.record_feedback(r[2], "bob", thumbs=-1, reasons=["incorrect"], flags=["harmful_advice"])


def test_exports_write_trl_formats(tree, tmp_path):
    feedback_of_every_kind(tree)
    s = tree.store
    assert exports.export(s, "preferences", tmp_path / "p.jsonl") == 1 + 3 + 1
    prefs = read_jsonl(tmp_path / "p.jsonl")
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in prefs)
    assert prefs[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert exports.export(s, "kto", tmp_path / "k.jsonl") == 2
    assert [row["label"] for row in read_jsonl(tmp_path / "k.jsonl")] == [True, False]
    assert exports.export(s, "sft", tmp_path / "s.jsonl") == 1
    assert read_jsonl(tmp_path / "s.jsonl")[0]["completion"] == [
        {"role": "assistant", "content": "Paris is the capital of France."}
    ]
    assert exports.export(s, "preferences", tmp_path / "none.jsonl", since="2999-01-01") == 0
    assert (
        exports.export(s, "preferences", tmp_path / "v2.jsonl", version_id=tree.v2) == 2
    )  # the A/B vote and the better answer

    # TRL reads them as conversational datasets of the right kind
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    for name, columns in (("p", {"prompt", "chosen", "rejected"}), ("k", {"prompt", "completion", "label"})):
        ds = load_dataset("json", data_files=str(tmp_path / f"{name}.jsonl"), split="train")
        assert set(ds.column_names) == columns and is_conversational(ds[0])


def test_raw_export_dumps_every_table(tree, tmp_path):
    feedback_of_every_kind(tree)
    s = tree.store
    n = exports.export(s, "raw", tmp_path / "raw.jsonl")
    lines = read_jsonl(tmp_path / "raw.jsonl")
    assert n == len(lines)
    counts = {}
    for line in lines:
        counts[line["table"]] = counts.get(line["table"], 0) + 1
    for table in ("messages", "feedback", "demonstrations", "comparisons", "rankings", "ranking_items"):
        assert counts[table] == s.count(table), table
    with pytest.raises(StoreError, match="full dump"):
        exports.export(s, "raw", tmp_path / "x.jsonl", since="2026-01-01")
    with pytest.raises(StoreError, match="unknown export format"):
        exports.export(s, "csv", tmp_path / "x.jsonl")


def test_preferences_round_trip_through_export_and_import(tree, tmp_path):
    feedback_of_every_kind(tree)
    exports.export(tree.store, "preferences", tmp_path / "p.jsonl")
    other = FeedbackStore(tmp_path / "other.db")
    try:
        report = imports.import_file(other, tmp_path / "p.jsonl", "trl-preference")
        assert report.committed and report.rejected == []
        exports.export(other, "preferences", tmp_path / "p2.jsonl")
    finally:
        other.close()
    original = read_jsonl(tmp_path / "p.jsonl")
    again = read_jsonl(tmp_path / "p2.jsonl")
    key = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731
    assert sorted(map(key, again)) == sorted({key(row) for row in original})  # identical pairs merge


def test_cli_export_and_import(tree, tmp_path, capsys):
    feedback_of_every_kind(tree)
    db = str(tree.store.path)
    out = tmp_path / "cli.jsonl"
    assert launch_main(["export", "--format", "preferences", "--out", str(out), "--db", db]) == 0
    assert "wrote 5 preferences rows" in capsys.readouterr().out
    assert len(read_jsonl(out)) == 5
    assert (
        launch_main(["export", "--format", "kto", "--out", str(out), "--db", str(tmp_path / "none.db")]) == 2
    )
    assert "no database" in capsys.readouterr().err
    assert launch_main(["export", "--format", "sft", "--out", str(out), "--db", db, "--since", "soon"]) == 2
    assert "ISO-8601" in capsys.readouterr().err


def test_launch_import_subcommand_prints_the_report(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_LINES)
    db = tmp_path / "cli.db"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "import",
            str(path),
            "--format",
            "hh-rlhf",
            "--db",
            str(db),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "2 accepted, 0 already imported (skipped), 4 rejected" in r.stdout
    assert "line 3:" in r.stdout
    broken = write_jsonl(tmp_path / "b.jsonl", [], raw_lines=["not json"])
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "import",
            str(broken),
            "--format",
            "hh-rlhf",
            "--db",
            str(db),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "NOTHING IMPORTED" in r.stdout
