"""Exports of the feedback database as JSONL files, thin writers over ``feedback_store.datasets``:

- ``preferences``: TRL conversational preference format, one line {"prompt", "chosen", "rejected"} (the
  weights of ranking and score pairs are not in this format); people's preferences only: pairs a model
  labelled (RLAIF, mode "ai") are in the ``raw`` export, marked by their mode, labeller and scores
- ``kto``: TRL conversational unpaired format from thumbs, 1-7 scores and flags (``feedback_store.labels``),
  {"prompt", "completion", "label"}
- ``sft``: TRL conversational prompt-completion format from better answers, {"prompt", "completion"}
- ``raw``: every row of every table, one line {"table": NAME, "row": {...}} (a full dump: no filters)

A file is written to a temporary name and renamed when complete, so a failed export never leaves a
truncated file where a good one is expected; it is read in one snapshot, so a deletion committed
meanwhile is in it entirely or not at all (deleted rows are gone from the database: no filter needed).
One user's own data ("my data") is ``store.conversations.export_user``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from feedback_store import datasets
from feedback_store.jsonl import write_jsonl
from feedback_store.store import FeedbackStore, StoreError

FORMATS = ("preferences", "kto", "sft", "raw")


def raw_rows(store: FeedbackStore) -> Iterable[dict[str, Any]]:
    """Every row of every table of the store (internal SQLite/migration tables excluded)."""
    db = store.db
    for table in sorted(db.table_names()):
        if table.startswith(("_", "sqlite_")):
            continue
        for row in db.query(f"SELECT * FROM [{table}] ORDER BY rowid"):  # noqa: S608 (a table name from the schema)
            yield {"table": table, "row": row}


def export(
    store: FeedbackStore,
    fmt: str,
    out: str | Path,
    *,
    since: str | datetime | None = None,
    version_id: int | None = None,
    user_id: str | None = None,
) -> int:
    """Write the ``fmt`` export to ``out``; returns the number of lines written."""
    filters = {"since": since, "version_id": version_id, "user_id": user_id}
    if fmt == "preferences":
        human = [s for s in datasets.PAIR_SOURCES if s != "ai"]
        rows: Iterable[dict[str, Any]] = (
            p.to_trl() for p in datasets.preference_pairs(store, sources=human, **filters)
        )
    elif fmt == "kto":
        rows = (e.to_trl() for e in datasets.unpaired_feedback(store, **filters))
    elif fmt == "sft":
        rows = (d.to_trl() for d in datasets.demonstrations(store, **filters))
    elif fmt == "raw":
        if any(v is not None for v in filters.values()):
            raise StoreError("the raw export is a full dump: it takes no --since/--version/--user filter")
        rows = raw_rows(store)
    else:
        raise StoreError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    with store.read():
        return write_jsonl(Path(out), rows)
