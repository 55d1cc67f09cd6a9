"""Hot-swapping model versions on the real embedded model through llama.cpp, with real adapters and a
real version registry: in-flight streams finish on the old version, broken adapters never take over,
deploys made by another process are noticed."""

import time

import pytest

from feedback_store.store import FeedbackStore
from models.base import SamplingParams
from models.embedded import embedded_model_path
from models.llamacpp import LlamaCppChatModel
from models.service import ModelService, VersionUnavailable
from models.versions import VersionLoader

Q = [{"role": "user", "content": "Why is the sky blue?"}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


@pytest.fixture
def setup(store, random_lora, tmp_path):
    """A service on the base version with three registered candidates: GGUF LoRA, PEFT-only, corrupt."""
    peft_dir, gguf = random_lora
    root = LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=1)
    base = store.versions.ensure_base(root.model_id)
    reg = store.versions
    v_gguf = reg.register_candidate(root.model_id, gguf_adapter_path=gguf, method="dpo", parent_id=base.id)
    v_peft = reg.register_candidate(root.model_id, adapter_path=peft_dir, method="kto", parent_id=base.id)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 256)
    v_bad = reg.register_candidate(root.model_id, gguf_adapter_path=corrupt, method="dpo")
    service = ModelService.from_registry(VersionLoader(root), reg, base_version_id=base.id, cache_size=1)
    yield service, base, v_gguf, v_peft, v_bad
    service.close()


def test_swap_keeps_running_streams_on_the_old_version(setup):
    service, base, v_gguf, _, _ = setup
    assert service.version_id == base.id
    base_text = service.generate(Q, GREEDY).text
    running = service.stream(Q, SamplingParams(temperature=0, max_new_tokens=60))
    first = next(running)
    report = service.activate(v_gguf.id)
    assert service.version_id == v_gguf.id and report.load_s > 0 and report.swap_s < report.load_s
    new = service.generate(Q, GREEDY)
    assert new.version_id == v_gguf.id and new.text != base_text  # the adapter is really applied
    old = first + "".join(running)
    assert running.result.version_id == base.id and running.result.finish_reason in ("stop", "length")
    assert old == running.result.text and old.startswith(base_text[:20])
    # the replaced version stays cached: comparing with it, and swapping back, needs no load
    # (llama.cpp reuses the cached prompt prefix, which can flip late greedy tokens: compare the start)
    again = service.generate(Q, GREEDY, version_id=base.id)
    assert again.version_id == base.id and again.text.split()[:3] == base_text.split()[:3]
    back = service.activate(base.id)
    assert back.from_cache and back.load_s == 0


def test_compare_loads_other_versions_on_demand_and_evicts(setup):
    service, base, v_gguf, v_peft, _ = setup
    ids = [v for v, _ in service.available_versions()]
    assert ids[0] == base.id and {v_gguf.id, v_peft.id} <= set(ids)
    a = service.generate(Q, GREEDY, version_id=v_peft.id)  # PEFT-only: exported to GGUF on the fly
    b = service.generate(Q, GREEDY, version_id=v_gguf.id)  # same adapter, exported by the fixture
    assert (
        a.version_id == v_peft.id and b.version_id == v_gguf.id and a.text.split()[:3] == b.text.split()[:3]
    )
    assert v_peft.id not in service._cache and v_gguf.id in service._cache  # cache_size=1: LRU evicted
    assert service.version_id == base.id  # comparing never changes the deployed version
    with pytest.raises(VersionUnavailable, match="No model version 999"):
        service.stream(Q, GREEDY, version_id=999)


def test_a_broken_adapter_never_replaces_the_deployed_version(setup):
    service, base, _, _, v_bad = setup
    with pytest.raises(VersionUnavailable, match=f"version {v_bad.id}.*cannot be loaded"):
        service.activate(v_bad.id)
    assert service.version_id == base.id
    service.registry.deploy(v_bad.id)  # e.g. a scheduler that did not check
    assert service.sync_with_registry() is None
    assert service.version_id == base.id and "cannot be loaded" in service.last_error
    assert service.generate(Q, GREEDY).version_id == base.id
    # a restart with that version deployed serves the base and says why
    again = ModelService.from_registry(
        VersionLoader(LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=1)),
        service.registry,
        base_version_id=base.id,
    )
    try:
        assert again.version_id == base.id and f"deployed version {v_bad.id}" in again.last_error
    finally:
        again.close()


def test_deploys_from_another_process_are_noticed(setup, store):
    from commands import run_command

    service, base, v_gguf, _, _ = setup
    service.start_watching(0.2)
    other = FeedbackStore(store.path)  # the scheduler / CLI: another connection to the same file
    try:
        other.versions.deploy(v_gguf.id)
    finally:
        other.close()
    deadline = time.monotonic() + 30
    while service.version_id != v_gguf.id and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.version_id == v_gguf.id
    assert run_command("rollback", ["--db", str(store.path)]) == 0
    deadline = time.monotonic() + 30
    while service.version_id != base.id and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.version_id == base.id
    assert service.generate(Q, GREEDY).version_id == base.id


def test_deploy_through_the_service_loads_before_writing(setup):
    service, base, v_gguf, _, v_bad = setup
    with pytest.raises(VersionUnavailable):
        service.deploy(v_bad.id)
    assert service.registry.deployed_id(service.base_model) == base.id  # database untouched
    report = service.deploy(v_gguf.id)
    assert report.version_id == v_gguf.id == service.registry.deployed_id(service.base_model)
    assert service.rollback().version_id == base.id
