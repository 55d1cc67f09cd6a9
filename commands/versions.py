"""``python launch.py versions | deploy | rollback``: the model version registry from the command line.

They act on the database only; a running server notices the new deployed version within
``--version-poll-s`` seconds (default 2) and hot-swaps to it without a restart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from pydantic import Field
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from feedback_store.store import FeedbackStore, ModelVersion, StoreError
from settings import CommonSettings


def open_store(settings: CommonSettings) -> FeedbackStore:
    """The existing database (these commands never create one)."""
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


class _StoreCommand(CommonSettings):
    """A command on the existing database: ``act`` runs with it open, and a StoreError (no database,
    a refused change) is one error line and exit status 2."""

    def act(self, store: FeedbackStore) -> int:
        raise NotImplementedError

    def run(self) -> int:
        try:
            store = open_store(self)
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            return self.act(store)
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()


class VersionsCommand(_StoreCommand):
    """List the model versions (base models and adapters) in the database."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py versions")

    base: str | None = Field(None, description="only versions of this base model")
    json_output: bool = Field(False, alias="json", description="print JSON instead of a table")

    def act(self, store: FeedbackStore) -> int:
        versions = store.versions.list(self.base)
        if self.json_output:
            print(json.dumps([v.__dict__ for v in versions], indent=2))
            return 0
        by_base: dict[str, list[ModelVersion]] = {}
        for v in versions:
            by_base.setdefault(v.base_model, []).append(v)
        for name, rows in by_base.items():
            print(f"# {name}\n{format_versions(rows)}\n")
        return 0


class _Change(_StoreCommand):
    def change(self, store: FeedbackStore) -> ModelVersion:
        raise NotImplementedError

    def act(self, store: FeedbackStore) -> int:
        row = self.change(store)
        print(f"version {row.id} ({row.name}) is now deployed for {row.base_model}.")
        print("A running server switches to it within a few seconds (--version-poll-s).")
        return 0


class DeployCommand(_Change):
    """Deploy a version (a candidate, or any earlier one)."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py deploy")

    version_id: CliPositionalArg[int] = Field(description="version id (`launch.py versions`)")
    force: bool = Field(False, description="deploy even a version the gate rejected")

    def change(self, store: FeedbackStore) -> ModelVersion:
        return store.versions.deploy(self.version_id, allow_rejected=self.force)


class RollbackCommand(_Change):
    """Deploy a version that served before (default: the previous one)."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py rollback")

    version_id: CliPositionalArg[int | None] = Field(
        None, description="version id to roll back to (`launch.py versions`); unset: the previous one"
    )

    def change(self, store: FeedbackStore) -> ModelVersion:
        if self.version_id is not None:
            return store.versions.rollback(self.version_id)
        bases = sorted({v.base_model for v in store.versions.list()})
        if len(bases) != 1:
            raise StoreError(f"several base models ({', '.join(bases)}): name the version to roll back to")
        return store.versions.rollback(base_model=bases[0])
