"""The knowledge base: real SQLite FTS5 over the bundled notes and user files."""

import contextlib

import pytest

from playground.tools import ToolError
from playground.tools.knowledge import BUNDLED_DIR, KnowledgeBase, chunk_text, query_words


@pytest.fixture
def kb(tmp_path):
    user = tmp_path / "notes"
    user.mkdir()
    base = KnowledgeBase(tmp_path / "kb.db", [BUNDLED_DIR, user])
    base.refresh()
    base.user_dir = user
    return base


def test_bundled_notes_are_indexed_and_searchable(kb):
    assert kb.count() >= 30
    hits = kb.search("capital of Australia")
    assert hits and hits[0].title == "Capital of Australia" and "Canberra" in hits[0].body
    assert "1628" in kb.run("When did the Vasa sink?")
    assert "7860" in kb.run("default port of the playground")


@pytest.mark.parametrize(
    "query", ['"; DROP TABLE chunks; --', "NEAR(a b)", "water*", "AND OR NOT", "title:gold", "^boiling", "'"]
)
def test_fts_syntax_in_queries_is_harmless(kb, query):
    with contextlib.suppress(ToolError):  # nothing left to search for: a clear refusal, not an SQL error
        kb.run(query)
    assert kb.count() >= 30


def test_queries_of_only_stopwords_are_refused(kb):
    assert query_words("what is the") == []
    assert query_words("Boiling point of WATER, water!") == ["boiling", "point", "water"]
    with pytest.raises(ToolError, match="needs a few words"):
        kb.run("what is the?")


def test_no_hits_is_an_observation_not_an_error(kb):
    assert kb.run("zzzyxq unobtainium").startswith("No notes found")


def test_user_files_are_added_updated_and_removed_incrementally(kb, tmp_path):
    note = kb.user_dir / "pets.md"
    note.write_text("# Our cat\nOur cat is called Mistigri and she is 4 years old.\n")
    report = kb.refresh()
    assert (report.added, report.updated, report.removed) == (1, 0, 0)
    assert "Mistigri" in kb.run("cat name")
    assert kb.refresh().added == 0  # unchanged files are not re-read
    note.write_text("# Our cat\nOur cat is called Minette.\n")
    assert kb.refresh().updated == 1
    assert "Minette" in kb.run("cat") and "Mistigri" not in kb.run("cat")
    note.unlink()
    assert kb.refresh().removed == 1
    assert "Minette" not in kb.run("cat")


def test_add_file_copies_into_the_user_folder_and_indexes_it(kb, tmp_path):
    upload = tmp_path / "My Notes!.txt"
    upload.write_text("The office plant is a ficus named Gerald.\n\nIt is watered on Mondays.")
    dest = kb.add_file(upload, kb.user_dir)
    assert dest.parent == kb.user_dir and dest.name == "My_Notes_.txt"
    assert "Gerald" in kb.run("office plant")
    bad = tmp_path / "script.py"
    bad.write_text("print(1)")
    with pytest.raises(ToolError, match="only"):
        kb.add_file(bad, kb.user_dir)
    big = tmp_path / "big.txt"
    big.write_text("x" * 1_100_000)
    with pytest.raises(ToolError, match="larger"):
        kb.add_file(big, kb.user_dir)


def test_chunking():
    md = "intro line\n# A\nalpha\n## B\nbeta\n"
    assert chunk_text(md, "file", markdown=True) == [("file", "intro line"), ("A", "alpha"), ("B", "beta")]
    text = "p1\n\np2\n\n" + "y" * 1300
    pieces = chunk_text(text, "t", markdown=False)
    assert pieces[0] == ("t", "p1\n\np2") and all(len(b) <= 1200 for _, b in pieces)
