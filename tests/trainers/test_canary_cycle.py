"""The training side of canary battles: a cycle's candidate goes on canary with the settings' budget and
the gate's confidence (superseding an older canary), a scheduled cycle waits while the users decide,
"run now" does not, and the scheduler's minute check applies a canary whose time is up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from settings import CanarySettings, Settings
from settings import TrainingSettings as SchedulerConfig
from trainers.cycle import CycleConfig, start_canary
from trainers.scheduler import TrainingScheduler, canary_summary


def two_candidates(store, tmp_path):
    base = store.versions.ensure_base("m.gguf")
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"GGUF")
    first, second = (
        store.versions.register_candidate("m.gguf", gguf_adapter_path=adapter, parent_id=base.id)
        for _ in range(2)
    )
    return base, first, second


def test_a_candidate_goes_on_canary_with_the_settings_budget_and_supersedes_the_older_one(store, tmp_path):
    base, first, second = two_candidates(store, tmp_path)
    settings = Settings(data_dir=tmp_path, canary_share=0.3, canary_votes=50, gate_confidence=0.9)
    config = CycleConfig.from_settings(settings)
    assert CycleConfig.from_dict(config.to_dict()).canary == config.canary  # survives the child process
    old = start_canary(store, config, first.id, base.id, "undecided", None)
    new = start_canary(store, config, second.id, base.id, "deploy", None)
    assert store.canaries.get(old.id).decision == "cancelled"
    assert "superseded by candidate v3" in store.canaries.get(old.id).reasons[0]
    assert (new.share, new.max_votes, new.per_user, new.fallback) == (0.3, 50, 20, "deploy")
    assert abs(new.alpha - 0.1) < 1e-9 and store.canaries.live().id == new.id
    assert "30% of anonymous battles" in canary_summary(config)
    assert canary_summary(CycleConfig(db_path=tmp_path / "x.db", data_dir=tmp_path)).startswith("off")


def test_scheduled_cycles_wait_while_a_canary_is_live_and_its_time_budget_is_applied(store, tmp_path):
    base, first, _ = two_candidates(store, tmp_path)
    config = CycleConfig(
        db_path=store.path, data_dir=tmp_path, canary=CanarySettings(share=0.5, hours=1), auto_deploy=True
    )
    canary = start_canary(store, config, first.id, base.id, "deploy", None)
    scheduler = TrainingScheduler(SchedulerConfig(every=0, min_feedback=0), config)
    try:
        assert scheduler._job("schedule") is None and scheduler.last_check["canary"] == canary.id
        assert store.runs.recent() == []
        scheduler.settle_canary()  # votes have not decided and there is time left
        assert store.canaries.live() is not None
        with store.write() as db:  # the hour has passed
            past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="milliseconds")
            db.execute("UPDATE canaries SET ends_at = ? WHERE id = ?", [past, canary.id])
        scheduler.settle_canary()
        ended = store.canaries.get(canary.id)
        assert ended.decision == "deployed" and "time budget" in ended.reasons[0]
        assert store.versions.deployed("m.gguf").id == first.id
    finally:
        scheduler.shutdown()
