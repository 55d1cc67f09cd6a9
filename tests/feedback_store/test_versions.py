"""The version registry on a real SQLite file: lineage, status changes, atomic deploy and rollback."""

import threading

import pytest

from feedback_store.store import StoreError

BASE = "SmolLM2.gguf"


@pytest.fixture
def registry(store):
    store.versions.ensure_base(BASE, name="SmolLM2 (base)")
    return store.versions


def adapter(tmp_path, name="a1"):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    return d


def test_register_candidate_records_lineage_and_metrics(registry, tmp_path):
    v = registry.register_candidate(
        BASE,
        adapter_path=adapter(tmp_path),
        parent_id=1,
        method="dpo",
        metrics={"win_rate": 0.6},
        training_run_id=7,
    )
    assert v.status == "candidate" and v.parent_id == 1 and v.method == "dpo"
    assert v.metrics == {"win_rate": 0.6} and v.training_run_id == 7
    assert v.name == f"v{v.id} (dpo)"
    assert v.adapter_path.startswith("/") and v.created_at and v.deployed_at is None
    assert registry.update_metrics(v.id, {"reward": 1.5}).metrics == {"win_rate": 0.6, "reward": 1.5}
    assert registry.update_metrics(v.id, {"x": 1}, replace=True).metrics == {"x": 1}


def test_register_rejects_bad_input(registry, tmp_path):
    with pytest.raises(StoreError, match="needs an adapter"):
        registry.register_candidate(BASE)
    with pytest.raises(StoreError, match="No model version 99"):
        registry.register_candidate(BASE, adapter_path=adapter(tmp_path), parent_id=99)
    with pytest.raises(StoreError, match="JSON"):
        registry.register_candidate(BASE, adapter_path=tmp_path, metrics={"x": float("nan")})
    other = registry.ensure_base("other.gguf")
    with pytest.raises(StoreError, match="parent version"):
        registry.register_candidate(BASE, adapter_path=tmp_path, parent_id=other.id)


def test_deploy_retires_the_old_version_atomically(registry, tmp_path):
    v = registry.register_candidate(BASE, adapter_path=adapter(tmp_path), parent_id=1)
    deployed = registry.deploy(v.id)
    assert deployed.status == "deployed" and deployed.deployed_at
    assert registry.get(1).status == "retired"
    assert registry.deployed_id(BASE) == v.id
    assert [x.id for x in registry.list(BASE, statuses=("deployed",))] == [v.id]
    assert registry.deploy(v.id).id == v.id  # idempotent


def test_rollback_goes_back_to_the_previous_deployed_version(registry, tmp_path):
    v2 = registry.register_candidate(BASE, adapter_path=adapter(tmp_path, "a2"))
    v3 = registry.register_candidate(BASE, adapter_path=adapter(tmp_path, "a3"))
    registry.deploy(v2.id)
    registry.deploy(v3.id)
    assert registry.rollback(base_model=BASE).id == v2.id
    assert registry.get(v3.id).status == "retired"
    assert registry.rollback(1).id == 1
    v4 = registry.register_candidate(BASE, adapter_path=adapter(tmp_path, "a4"))
    with pytest.raises(StoreError, match="never deployed"):
        registry.rollback(v4.id)


def test_rejected_and_missing_adapters_are_not_deployed(registry, tmp_path):
    d = adapter(tmp_path)
    v = registry.register_candidate(BASE, adapter_path=d)
    registry.set_status(v.id, "rejected", notes="lost to v1 40-60")
    assert registry.get(v.id).notes == "lost to v1 40-60"
    with pytest.raises(StoreError, match="rejected"):
        registry.deploy(v.id)
    w = registry.register_candidate(BASE, gguf_adapter_path=tmp_path / "gone.gguf")
    with pytest.raises(StoreError, match="missing"):
        registry.deploy(w.id)
    assert registry.deployed_id(BASE) == 1  # nothing changed
    with pytest.raises(StoreError, match="use deploy"):
        registry.set_status(v.id, "deployed")
    with pytest.raises(StoreError, match="is deployed"):
        registry.set_status(1, "retired")


def test_concurrent_deploys_leave_exactly_one_deployed(registry, tmp_path):
    ids = [registry.register_candidate(BASE, adapter_path=adapter(tmp_path, f"c{i}")).id for i in range(6)]
    errors = []

    def deploy(i):
        try:
            registry.deploy(i)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(registry.list(BASE, statuses=("deployed",))) == 1
    assert registry.deployed_id(BASE) in ids
