"""``python launch.py versions | deploy | rollback``: the model version registry from the command line.

They act on the database only; a running server notices the new deployed version within
``--version-poll-s`` seconds (default 2) and hot-swaps to it without a restart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from feedback_store.store import FeedbackStore, ModelVersion, StoreError
from playground.settings import Settings


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"launch.py {prog}", description=description, argument_default=argparse.SUPPRESS
    )
    p.add_argument("--data-dir", help="data directory (default ./data)")
    p.add_argument("--db", help="SQLite file (default DATA_DIR/playground.db)")
    return p


def _store(args: argparse.Namespace) -> FeedbackStore:
    settings = Settings(**{k: v for k, v in vars(args).items() if k in ("data_dir", "db") and v is not None})
    if not settings.db_path.exists():
        raise StoreError(f"no database at {settings.db_path}; pass --db or --data-dir")
    return FeedbackStore(settings.db_path)


def format_versions(versions: Sequence[ModelVersion]) -> str:
    rows = [("id", "status", "name", "method", "parent", "created", "deployed", "metrics")]
    for v in versions:
        rows.append(
            (
                str(v.id),
                v.status,
                v.name,
                v.method or "",
                "" if v.parent_id is None else str(v.parent_id),
                v.created_at[:19],
                (v.deployed_at or "")[:19],
                json.dumps(v.metrics, sort_keys=True)[:60] if v.metrics else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def versions_command(argv: list[str]) -> int:
    p = _parser("versions", "List the model versions (base models and adapters) in the database.")
    p.add_argument("--base", default=None, help="only versions of this base model")
    p.add_argument("--json", action="store_true", default=False, help="print JSON instead of a table")
    args = p.parse_args(argv)
    base, as_json = args.base, args.json
    try:
        store = _store(args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        versions = store.versions.list(base)
        if as_json:
            print(json.dumps([v.__dict__ for v in versions], indent=2))
        else:
            by_base: dict[str, list[ModelVersion]] = {}
            for v in versions:
                by_base.setdefault(v.base_model, []).append(v)
            for name, rows in by_base.items():
                print(f"# {name}\n{format_versions(rows)}\n")
        return 0
    finally:
        store.close()


def _change(argv: list[str], *, rollback: bool) -> int:
    name = "rollback" if rollback else "deploy"
    p = _parser(
        name,
        "Deploy a version that served before (default: the previous one)."
        if rollback
        else "Deploy a version (a candidate, or any earlier one).",
    )
    p.add_argument(
        "version_id",
        type=int,
        nargs="?" if rollback else None,
        default=None,
        help="version id (`launch.py versions`)",
    )
    if not rollback:
        p.add_argument(
            "--force", action="store_true", default=False, help="deploy even a version the gate rejected"
        )
    args = p.parse_args(argv)
    version_id, force = args.version_id, getattr(args, "force", False)
    try:
        store = _store(args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        registry = store.versions
        if rollback:
            if version_id is None:
                bases = sorted({v.base_model for v in registry.list()})
                if len(bases) != 1:
                    raise StoreError(
                        f"several base models ({', '.join(bases)}): name the version to roll back to"
                    )
                row = registry.rollback(base_model=bases[0])
            else:
                row = registry.rollback(version_id)
        else:
            row = registry.deploy(version_id, allow_rejected=force)
        print(f"version {row.id} ({row.name}) is now deployed for {row.base_model}.")
        print("A running server switches to it within a few seconds (--version-poll-s).")
        return 0
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def deploy_command(argv: list[str]) -> int:
    return _change(argv, rollback=False)


def rollback_command(argv: list[str]) -> int:
    return _change(argv, rollback=True)
