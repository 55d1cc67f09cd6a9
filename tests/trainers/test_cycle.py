"""Whole training cycles on the embedded model with feedback the tests create: candidate registered, the
gate's decision stored with reasons, deploy swaps the served version (the next reply records the new
version id), rollback restores the old one, a rejected candidate changes nothing, and faults (a corrupt
exported adapter, a full disk, a NaN loss) leave the deployed version serving."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from feedback_store import datasets as ds
from feedback_store.store import FeedbackStore
from tests.conftest import ROOT
from tests.trainers.conftest import seed_feedback
from trainers.cycle import CycleConfig
from trainers.cycle import check_finite as _check_finite
from trainers.gate import GateConfig
from trainers.registry import choose_method
from trainers.worker import run_cycle_for

pytestmark = pytest.mark.slow

TINY = {"max_steps": 2, "max_length": 64, "lora_targets": ("q_proj", "v_proj")}
LENIENT = GateConfig(
    min_win_rate=0.0,
    kl_budget=1000,
    max_regressions=99,
    eval_prompts=2,
    facts=2,
    refusals=1,
    max_new_tokens=16,
)


def data_dir_with_base(path: Path, hf_base_dir: Path) -> Path:
    """A data directory whose dequantized-base cache points at the session's copy (no 15 s conversion)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "hf-base").symlink_to(hf_base_dir.parent, target_is_directory=True)
    return path


def cycle_config(data_dir: Path, **kw) -> CycleConfig:
    defaults = dict(
        db_path=data_dir / "playground.db",
        data_dir=data_dir,
        method="dpo",
        threads=2,
        reward_overrides=dict(TINY),
        policy_overrides=dict(TINY),
        gate=LENIENT,
    )
    return CycleConfig(**{**defaults, **kw})


@pytest.fixture(scope="module")
def loop(tmp_path_factory, hf_base_dir, embedded_model):
    """A served model, seeded feedback and one full cycle with a lenient gate and auto-deploy."""
    from models.service import ModelService
    from models.versions import VersionLoader

    data = data_dir_with_base(tmp_path_factory.mktemp("loop"), hf_base_dir)
    config = cycle_config(data, ai_pairs=4, ai_weight=0.5)
    store = FeedbackStore(config.db_path)
    base_id = seed_feedback(store)
    unrated_chats(store, base_id)
    service = ModelService.from_registry(
        VersionLoader(embedded_model), store.versions, base_version_id=base_id
    )
    before = service.generate([{"role": "user", "content": "Hi"}], _greedy())
    run = store.runs.start("test", config.to_dict())
    code = run_cycle_for(config, run.id)
    yield {
        "store": store,
        "service": service,
        "config": config,
        "run_id": run.id,
        "code": code,
        "base_id": base_id,
        "before": before,
    }
    service.close()
    store.close()


UNRATED = ["What is a good name for a cat?", "How do I boil an egg?", "Why do leaves fall?",
           "What is a prime number?", "Tell me a fun fact about owls.", "How far is the Moon?"]  # fmt: skip


def unrated_chats(store, base_id: int) -> None:
    """Chat-tab questions that got a reply and no feedback: what the cycle's AI labeller labels."""
    from feedback_store.store import AssistantTurn

    for i, question in enumerate(UNRATED):
        conv = store.create_conversation(f"quiet{i % 2}", system_prompt="Be brief.")
        asked = store.add_message(conv, "user", question)
        store.add_assistant_message(
            conv, asked, AssistantTurn(content="I am not sure.", model_version_id=base_id)
        )


def test_the_cycle_labels_unrated_questions_with_its_reward_model(loop):
    store = loop["store"]
    run = store.runs.get(loop["run_id"])
    rows = list(
        store.db.query(
            "SELECT c.user_id, c.differed, v.user_id AS owner, v.source FROM comparisons c "
            "JOIN messages m ON m.id = c.message_a JOIN conversations v ON v.id = m.conversation_id "
            "WHERE c.mode = 'ai'"
        )
    )
    assert 1 <= len(rows) <= 4 and run.metrics["data"]["ai_pairs"] == len(rows)
    assert {r["user_id"] for r in rows} == {"ai:reward-model"} and {r["source"] for r in rows} == {"ai"}
    assert {r["owner"] for r in rows} <= {"quiet0", "quiet1"}  # the asker owns the copy: deleting deletes it
    scores = [json.loads(r["differed"])["scores"] for r in rows]
    assert all(len(s) == 2 and s[0] != s[1] for s in scores)
    pairs = [p for p in ds.preference_pairs(store) if p.source == "ai"]
    assert len(pairs) == len(rows) and all(
        p.chosen != p.rejected and p.prompt[0] == {"role": "system", "content": "Be brief."} for p in pairs
    )
    # the users' feedback is 24 votes and 48 thumbs: the AI pairs are neither new feedback nor votes
    assert store.runs.feedback_count() == 72 and run.metrics["data"]["votes"] == 24


def _greedy():
    from models.base import SamplingParams

    return SamplingParams(temperature=0, max_new_tokens=8)


def test_cycle_registers_deploys_and_records_its_decision(loop):
    store, runs = loop["store"], loop["store"].runs
    assert loop["code"] == 0
    run = runs.get(loop["run_id"])
    assert run.status == "succeeded" and run.decision == "deployed", run
    assert any("win rate" in r for r in run.reasons) and any("KL" in r for r in run.reasons)
    assert set(run.stage_seconds) >= {"export", "reward", "policy", "evaluate", "deploy"}
    candidate = store.versions.get(run.candidate_version_id)
    assert candidate.status == "deployed" and candidate.parent_id == loop["base_id"]
    assert (
        Path(candidate.adapter_path, "adapter_config.json").exists()
        and Path(candidate.gguf_adapter_path).exists()
    )
    assert {"win_rate", "kl_to_base", "facts_base_correct"} <= set(candidate.metrics)
    assert runs.events()[0]["action"] == "deploy" and runs.events()[0]["actor"] == "gate"


def test_deploy_swaps_the_served_version_and_rollback_restores_it(loop):
    store, service = loop["store"], loop["service"]
    candidate_id = store.runs.get(loop["run_id"]).candidate_version_id
    assert loop["before"].version_id == loop["base_id"]
    service.sync_with_registry()  # what the server's watcher does every couple of seconds
    assert service.generate([{"role": "user", "content": "Hi"}], _greedy()).version_id == candidate_id
    store.versions.rollback(loop["base_id"])
    service.sync_with_registry()
    assert service.generate([{"role": "user", "content": "Hi"}], _greedy()).version_id == loop["base_id"]
    store.versions.deploy(candidate_id)  # leave the loop as the cycle left it
    service.sync_with_registry()


def test_a_rejected_candidate_changes_nothing(loop):
    store = loop["store"]
    deployed_before = store.versions.deployed(_embedded_name()).id
    # the shipped replay text and no AI pairs: the deployed version is the loop's candidate, whose
    # replay answers would take 30 s to make, and the rejection is under test here, not the data
    config = replace(
        loop["config"], gate=LENIENT.model_copy(update={"min_win_rate": 1.01}), replay="text", ai_pairs=0
    )
    run = store.runs.start("test", config.to_dict())
    assert run_cycle_for(config, run.id) == 0
    run = store.runs.get(run.id)
    assert run.decision == "rejected" and any("win rate" in r and "<" in r for r in run.reasons)
    assert store.versions.get(run.candidate_version_id).status == "rejected"
    assert store.versions.deployed(_embedded_name()).id == deployed_before
    assert store.runs.events()[0]["action"] == "reject"


def test_a_corrupt_exported_adapter_fails_the_cycle_and_changes_nothing(loop, monkeypatch):
    import models.lora_export

    def corrupt_export(adapter_dir, out_path, **_):
        Path(out_path).write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(256))

    monkeypatch.setattr(models.lora_export, "export_peft_lora_to_gguf", corrupt_export)
    store = loop["store"]
    deployed_before = store.versions.deployed(_embedded_name()).id
    config = replace(loop["config"], replay="text", ai_pairs=0)  # as above: the export is under test
    run = store.runs.start("test", config.to_dict())
    assert run_cycle_for(config, run.id) == 1
    run = store.runs.get(run.id)
    assert run.status == "failed" and run.stage == "evaluate", run
    assert store.versions.deployed(_embedded_name()).id == deployed_before


def test_a_full_disk_fails_the_cycle_and_changes_nothing(tmp_path, hf_base_dir):
    """The cycle process may write only 2 MB per file (RLIMIT_FSIZE): saving the first adapter fails."""
    data = data_dir_with_base(tmp_path, hf_base_dir)
    config = cycle_config(data)
    store = FeedbackStore(config.db_path)
    seed_feedback(store)
    deployed = store.versions.deployed(_embedded_name()).id
    run = store.runs.start("test", config.to_dict())
    (data / "cfg.json").write_text(json.dumps(config.to_dict()))

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, 2 * 1024 * 1024))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.worker",
            "--run-id",
            str(run.id),
            "--config",
            str(data / "cfg.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    run = store.runs.get(run.id)
    assert run.status == "failed" and "too large" in run.error.lower(), run.error
    assert store.versions.deployed(_embedded_name()).id == deployed
    assert list((data / "reward_models").iterdir()) == []  # no half-written adapter left behind
    store.close()


def test_nan_losses_are_caught():
    _check_finite({"loss_curve": [{"step": 1, "loss": 0.7}]}, "dpo")
    with pytest.raises(FloatingPointError, match="diverged"):
        _check_finite({"loss_curve": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": float("nan")}]}, "dpo")


def test_method_choice():
    assert choose_method(40, 5, 5, 0) == "dpo"
    assert choose_method(10, 30, 30, 0) == "kto"  # thumbs dominate
    assert choose_method(0, 0, 0, 12) == "sft"
    assert choose_method(3, 1, 0, 2) is None


def _embedded_name() -> str:
    from models.embedded import embedded_model_path

    return embedded_model_path().name


def test_a_cycle_run_in_process_gives_the_callers_sigterm_handler_back(tmp_path):
    """The worker's "stop politely" handler holds only while the cycle runs (here: too little data)."""

    def mine(*_):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        config = cycle_config(tmp_path)
        store = FeedbackStore(config.db_path)
        try:
            run = store.runs.start("test", config.to_dict())
            assert run_cycle_for(config, run.id) == 0
            assert store.runs.get(run.id).decision == "no_candidate"
        finally:
            store.close()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
