"""``python launch.py export`` and ``import``: the stored feedback as JSONL files.

python launch.py export --format {preferences,kto,sft,raw} --out PATH [--since ISO] [--db PATH]
python launch.py import PATH --format {hh-rlhf,trl-preference} [--db PATH] [--user NAME] [--strict]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from feedback_store import exports, imports
from feedback_store.store import FeedbackStore, StoreError
from settings import CommonSettings


class ExportCommand(CommonSettings):
    """Export stored feedback as JSONL (TRL formats or raw tables)."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py export")

    format: Literal[exports.FORMATS] = Field(  # type: ignore[valid-type]
        description="preferences: prompt/chosen/rejected (DPO, reward model); kto: prompt/completion/label; "
        "sft: prompt/completion from better answers; raw: every table"
    )
    out: Path = Field(description="the JSONL file to write")
    since: str | None = Field(
        None, description="only rows updated at or after this ISO-8601 time (UTC if no zone)"
    )
    version: int | None = Field(None, description="only replies written by this model version")
    user: str | None = Field(None, description="only feedback given by this user")

    def run(self) -> int:
        if not self.db_path.exists():
            print(f"error: no database at {self.db_path} (use --db PATH)", file=sys.stderr)
            return 2
        store = FeedbackStore(self.db_path)
        try:
            n = exports.export(
                store, self.format, self.out, since=self.since, version_id=self.version, user_id=self.user
            )
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
        print(f"wrote {n} {self.format} rows to {self.out}")
        return 0


class ImportCommand(CommonSettings):
    """Import preference pairs (all or nothing: a broken file changes nothing)."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py import")

    path: CliPositionalArg[Path] = Field(description="a JSONL file")
    format: Literal[imports.FORMATS] = Field(description="the file's format")  # type: ignore[valid-type]
    user: str | None = Field(None, description="who the pairs are attributed to; unset: import:FILENAME")
    strict: bool = Field(False, description="refuse the whole file if any line is rejected")

    def run(self) -> int:
        store = FeedbackStore(self.db_path)
        try:
            report = imports.import_file(store, self.path, self.format, user_id=self.user, strict=self.strict)
        finally:
            store.close()
        print(report.summary())
        return 0 if report.committed else 1
