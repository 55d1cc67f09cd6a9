"""The model version registry: base models plus LoRA adapter versions, their lineage, metrics and status.

A version is ``candidate`` when a trainer registers it, ``deployed`` when it serves (exactly one per
base model, enforced by a unique index), ``retired`` when a newer one replaced it, ``rejected`` when it
failed the evaluation gate. Trainers call :meth:`VersionRegistry.register_candidate`; the scheduler (or
a person through ``python launch.py rollback``) calls :meth:`deploy` / :meth:`rollback`. The serving
process notices a change of the deployed row and hot-swaps; this module only writes the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.records import VERSION_STATUSES, ModelVersion, StoreError


class VersionRegistry(Repository):
    """Typed access to the ``model_versions`` table (no other module reads or writes it). Every state
    change is one BEGIN IMMEDIATE transaction."""

    # -- the base and reads ------------------------------------------------------------------------
    def ensure_base(self, base_model: str, name: str | None = None) -> ModelVersion:
        """Return the base version (no adapter) of ``base_model``, creating it on first use.

        A new base version is deployed when nothing else is deployed for that base model, so a fresh
        database serves version 1 = the base model.
        """
        with self.write() as db:
            row = next(
                db.query(
                    "SELECT * FROM model_versions WHERE base_model = ? AND adapter_path IS NULL "
                    "ORDER BY id LIMIT 1",
                    [base_model],
                ),
                None,
            )
            if row is None:
                deployed = next(
                    db.query(
                        "SELECT id FROM model_versions WHERE base_model = ? AND status = 'deployed'",
                        [base_model],
                    ),
                    None,
                )
                now = utc_now()
                db.execute(
                    "INSERT INTO model_versions (name, base_model, status, created_at, deployed_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        name or f"{base_model} (base)",
                        base_model,
                        "retired" if deployed else "deployed",
                        now,
                        None if deployed else now,
                    ],
                )
                row = next(
                    db.query(
                        "SELECT * FROM model_versions WHERE base_model = ? AND adapter_path IS NULL "
                        "ORDER BY id LIMIT 1",
                        [base_model],
                    )
                )
        return ModelVersion.from_row(row)

    def get(self, version_id: int) -> ModelVersion:
        row = next(self.db.query("SELECT * FROM model_versions WHERE id = ?", [version_id]), None)
        if row is None:
            raise StoreError(f"No model version {version_id}; `python launch.py versions` lists them.")
        return ModelVersion.from_row(row)

    def deployed(self, base_model: str) -> ModelVersion | None:
        row = next(
            self.db.query(
                "SELECT * FROM model_versions WHERE base_model = ? AND status = 'deployed'",
                [base_model],
            ),
            None,
        )
        return None if row is None else ModelVersion.from_row(row)

    def _all(self, base_model: str | None = None) -> list[ModelVersion]:
        if base_model is None:
            rows = self.db.query("SELECT * FROM model_versions ORDER BY id")
        else:
            rows = self.db.query(
                "SELECT * FROM model_versions WHERE base_model = ? ORDER BY id", [base_model]
            )
        return [ModelVersion.from_row(r) for r in rows]

    def deployed_id(self, base_model: str) -> int | None:
        """The deployed version's id only: a cheap read the server polls every few seconds."""
        row = self.db.execute(
            "SELECT id FROM model_versions WHERE base_model = ? AND status = 'deployed'", [base_model]
        ).fetchone()
        return None if row is None else int(row[0])

    def list(
        self, base_model: str | None = None, *, statuses: tuple[str, ...] | None = None
    ) -> list[ModelVersion]:
        versions = self._all(base_model)
        if statuses is not None:
            versions = [v for v in versions if v.status in statuses]
        return versions

    def previous_deployed(self, base_model: str) -> ModelVersion | None:
        """The version deployed most recently before the current one (the default rollback target)."""
        row = next(
            self.db.query(
                "SELECT * FROM model_versions WHERE base_model = ? AND status = 'retired' "
                "AND deployed_at IS NOT NULL ORDER BY deployed_at DESC, id DESC LIMIT 1",
                [base_model],
            ),
            None,
        )
        return None if row is None else ModelVersion.from_row(row)

    # -- writes ----------------------------------------------------------------------------------
    def register_candidate(
        self,
        base_model: str,
        *,
        adapter_path: str | Path | None = None,
        gguf_adapter_path: str | Path | None = None,
        parent_id: int | None = None,
        method: str | None = None,
        metrics: dict[str, Any] | None = None,
        training_run_id: int | None = None,
        name: str | None = None,
        notes: str | None = None,
    ) -> ModelVersion:
        """Record a trained adapter as a candidate. At least one adapter path is required; paths are stored
        absolute so that the server finds them whatever its working directory."""
        if adapter_path is None and gguf_adapter_path is None:
            raise StoreError("a candidate needs an adapter: pass adapter_path and/or gguf_adapter_path")
        if parent_id is not None:
            parent = self.get(parent_id)
            if parent.base_model != base_model:
                raise StoreError(
                    f"parent version {parent_id} is for {parent.base_model!r}, not {base_model!r}"
                )
        _check_json(metrics)
        with self.write() as db:
            cursor = db.execute(
                "INSERT INTO model_versions (name, base_model, adapter_path, gguf_adapter_path, parent_id, "
                "training_run_id, method, status, metrics, notes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'candidate', ?, ?, ?)",
                [
                    name or "",
                    base_model,
                    _abs(adapter_path),
                    _abs(gguf_adapter_path),
                    parent_id,
                    training_run_id,
                    method,
                    json.dumps(metrics or {}, sort_keys=True),
                    notes,
                    utc_now(),
                ],
            )
            version_id = int(cursor.lastrowid)
            if not name:  # a readable default that says what it is
                db.execute(
                    "UPDATE model_versions SET name = ? WHERE id = ?",
                    [f"v{version_id}" + (f" ({method})" if method else ""), version_id],
                )
        return self.get(version_id)

    def set_status(self, version_id: int, status: str, *, notes: str | None = None) -> ModelVersion:
        """Mark a version candidate, retired or rejected. Deploying goes through :meth:`deploy`."""
        if status not in VERSION_STATUSES:
            raise StoreError(f"status must be one of {VERSION_STATUSES}, got {status!r}")
        if status == "deployed":
            raise StoreError("use deploy(version_id) to deploy: it retires the current version atomically")
        current = self.get(version_id)
        if current.status == "deployed":
            raise StoreError(
                f"version {version_id} is deployed; deploy or roll back to another version first"
            )
        with self.write() as db:
            db.execute(
                "UPDATE model_versions SET status = ?, notes = COALESCE(?, notes) WHERE id = ?",
                [status, notes, version_id],
            )
        return self.get(version_id)

    def update_metrics(
        self, version_id: int, metrics: dict[str, Any], *, replace: bool = False
    ) -> ModelVersion:
        """Merge ``metrics`` into the version's metrics (or replace them all)."""
        _check_json(metrics)
        with self.write() as db:
            row = db.execute("SELECT metrics FROM model_versions WHERE id = ?", [version_id]).fetchone()
            if row is None:
                raise StoreError(f"No model version {version_id}.")
            merged = dict(metrics) if replace else {**json.loads(row[0] or "{}"), **metrics}
            db.execute(
                "UPDATE model_versions SET metrics = ? WHERE id = ?",
                [json.dumps(merged, sort_keys=True), version_id],
            )
        return self.get(version_id)

    def set_gguf_adapter_path(self, version_id: int, path: str | Path) -> ModelVersion:
        """Record the llama.cpp (GGUF LoRA) export of a version's PEFT adapter."""
        with self.write() as db:
            db.execute(
                "UPDATE model_versions SET gguf_adapter_path = ? WHERE id = ?", [_abs(path), version_id]
            )
        return self.get(version_id)

    def deploy(self, version_id: int, *, allow_rejected: bool = False) -> ModelVersion:
        """Make ``version_id`` the deployed version of its base model, retiring the one deployed now.

        Atomic: both rows change in one transaction, so the "one deployed per base model" index never
        sees two and a crash leaves the old state. Adapter files must exist (a cheap guard; whether
        they load is checked by the server, which keeps serving the old version if they do not).
        """
        with self.write() as db:
            row = next(db.query("SELECT * FROM model_versions WHERE id = ?", [version_id]), None)
            if row is None:
                raise StoreError(f"No model version {version_id}; `python launch.py versions` lists them.")
            target = ModelVersion.from_row(row)
            if target.status == "deployed":
                return target
            if target.status == "rejected" and not allow_rejected:
                raise StoreError(
                    f"version {version_id} was rejected by the evaluation gate; pass allow_rejected=True "
                    "(CLI: --force) to deploy it anyway"
                )
            missing = [
                p
                for p in (target.adapter_path, target.gguf_adapter_path)
                if p is not None and not Path(p).exists()
            ]
            if missing:
                raise StoreError(f"version {version_id}: adapter file(s) missing: {', '.join(missing)}")
            now = utc_now()
            db.execute(
                "UPDATE model_versions SET status = 'retired' WHERE base_model = ? AND status = 'deployed'",
                [target.base_model],
            )
            db.execute(
                "UPDATE model_versions SET status = 'deployed', deployed_at = ? WHERE id = ?",
                [now, version_id],
            )
        return self.get(version_id)

    def rollback(self, to_version_id: int | None = None, *, base_model: str | None = None) -> ModelVersion:
        """Deploy a version that served before: ``to_version_id``, or (given ``base_model``) the one
        deployed just before the current one."""
        if to_version_id is None:
            if base_model is None:
                raise StoreError("rollback needs a version id or a base model")
            target = self.previous_deployed(base_model)
            if target is None:
                raise StoreError(f"nothing to roll back to: no earlier deployed version of {base_model!r}")
        else:
            target = self.get(to_version_id)
            if base_model is not None and target.base_model != base_model:
                raise StoreError(
                    f"version {to_version_id} belongs to {target.base_model!r}, not {base_model!r}"
                )
            if target.deployed_at is None:
                raise StoreError(
                    f"version {to_version_id} was never deployed; roll back only to a version that served "
                    "before (deploy a new candidate with deploy)"
                )
        return self.deploy(target.id, allow_rejected=True)


def _abs(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _check_json(metrics: dict[str, Any] | None) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise StoreError("metrics must be a dict")
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"metrics must be JSON-serialisable finite values: {exc}") from exc
