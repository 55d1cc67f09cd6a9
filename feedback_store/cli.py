"""The ``export`` and ``import`` subcommands of launch.py:

    python launch.py export --format {preferences,kto,sft,raw} --out PATH [--since ISO] [--db PATH]
    python launch.py import PATH --format {hh-rlhf,trl-preference} [--db PATH] [--user NAME] [--strict]

``--db`` defaults to the serving default: PLAYGROUND_DB, else PLAYGROUND_DATA_DIR/playground.db,
else data/playground.db (the same rule as playground.settings, which this package may not import).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from feedback_store import exports, imports
from feedback_store.store import FeedbackStore, StoreError


def default_db() -> Path:
    if os.environ.get("PLAYGROUND_DB"):
        return Path(os.environ["PLAYGROUND_DB"])
    return Path(os.environ.get("PLAYGROUND_DATA_DIR") or "data") / "playground.db"


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, help="the SQLite file (default: data/playground.db)")
    p.add_argument("--data-dir", type=Path, help="use DATA_DIR/playground.db")


def _db_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return args.db
    if args.data_dir is not None:
        return args.data_dir / "playground.db"
    return default_db()


def export_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="launch.py export", description="Export stored feedback as JSONL (TRL formats or raw tables)."
    )
    p.add_argument(
        "--format",
        required=True,
        choices=exports.FORMATS,
        help="preferences: prompt/chosen/rejected (DPO, reward model); kto: prompt/completion/label; "
        "sft: prompt/completion from better answers; raw: every table",
    )
    p.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
    p.add_argument("--since", help="only rows updated at or after this ISO-8601 time (UTC if no zone)")
    p.add_argument("--version", type=int, help="only replies written by this model version")
    p.add_argument("--user", help="only feedback given by this user")
    _db_args(p)
    args = p.parse_args(list(argv))
    db_path = _db_path(args)
    if not db_path.exists():
        print(f"error: no database at {db_path} (use --db PATH)", file=sys.stderr)
        return 2
    store = FeedbackStore(db_path)
    try:
        n = exports.export(
            store, args.format, args.out, since=args.since, version_id=args.version, user_id=args.user
        )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"wrote {n} {args.format} rows to {args.out}")
    return 0


def import_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="launch.py import",
        description="Import preference pairs (all or nothing: a broken file changes nothing).",
    )
    p.add_argument("path", type=Path, help="a JSONL file")
    p.add_argument("--format", required=True, choices=imports.FORMATS)
    p.add_argument("--user", help="who the pairs are attributed to (default: import:FILENAME)")
    p.add_argument("--strict", action="store_true", help="refuse the whole file if any line is rejected")
    _db_args(p)
    args = p.parse_args(list(argv))
    store = FeedbackStore(_db_path(args))
    try:
        report = imports.import_file(store, args.path, args.format, user_id=args.user, strict=args.strict)
    finally:
        store.close()
    print(report.summary())
    return 0 if report.committed else 1
