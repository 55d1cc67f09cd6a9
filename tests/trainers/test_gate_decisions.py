"""The product's default gate on real models: a cycle on feedback with a clear preference deploys its
genuinely improved candidate, and an adapter trained on the opposite preference is rejected against the
same reward model and regression prompts.

The votes are those the Compare tab collects: on half the prompts a polite reply against the base's own
answer, on the others the polite reply against a rude one, the polite one chosen every time. Votes only
between two replies the model never writes (polite against rude) are not enough: DPO then separates them
by sinking the rude one, the model's own samples barely change, and the reward model rightly sees no
improvement in them. The damaged adapter is trained the same way the other way round: the rude reply
chosen over the base's own answer."""

from __future__ import annotations

import os

import pytest

from feedback_store.store import AssistantTurn, FeedbackStore
from settings import DEFAULT_SYSTEM_PROMPT
from tests.trainers.conftest import TOPICS, polite, rude
from tests.trainers.test_cycle import cycle_config, data_dir_with_base
from trainers.data import PreferencePair
from trainers.gate import GateConfig
from trainers.worker import run_cycle_for

# NOT MET (issue 16), measured 2026-12-01 with this file as it is: the default gate leaves both undecided.
# The improved candidate: reward-model win rate 0.65 [0.47, 0.82] over the 20 held-out prompts there
# are, and 3 regression facts lost (Spain, Zambia, Oliver Twist: "not shown within -0.10"); the damaged
# one: 0.57 [0.42, 0.72]. Too little evidence for a decision either way, and a reward model that barely
# tells rude from polite replies. The test takes about 16 minutes on 2 cores; it is skipped so that CI
# does not spend them on a known failure, and says so in every run's summary. Run it with
# PLAYGROUND_RUN_GATE_DECISIONS=1.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("PLAYGROUND_RUN_GATE_DECISIONS"),
        reason="known failure, issue 16: the default gate leaves both candidates undecided on 20 held-out "
        "prompts (PLAYGROUND_RUN_GATE_DECISIONS=1 runs it)",
    ),
]

# Enough optimisation for the preference to show in sampled replies; the gate is the default one. The
# replay term replays the shipped prose (the default replays answers it must first generate: a minute).
REWARD = {"max_steps": 12, "max_length": 96, "learning_rate": 3e-4}
POLICY = {"max_steps": 16, "max_length": 96, "learning_rate": 1e-3}


def seed_votes(store: FeedbackStore, model, n_prompts: int) -> list[tuple[str, str, str]]:
    """Polite replies chosen over the base's own greedy answer (even prompts) or a rude reply (odd).
    Returns (question, topic, the base's answer) of the even prompts."""
    from models.base import SamplingParams
    from models.embedded import embedded_model_path

    base = store.versions.ensure_base(embedded_model_path().name)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=40)
    answers = []
    for i in range(n_prompts):
        topic = TOPICS[i % len(TOPICS)]
        user = f"user{i % 6}"
        conv = store.create_conversation(user, source="compare")
        text = f"Tell me something about {topic}. (#{i})"
        question = store.add_message(conv, "user", text)
        if i % 2:
            other = rude(topic)
        else:
            other = model.generate([{"role": "user", "content": text}], greedy).text
            answers.append((text, topic, other))
        good, bad = (
            store.add_assistant_message(
                conv, question, AssistantTurn(content=reply, model_version_id=base.id)
            )
            for reply in (polite(topic), other)
        )
        a, b, vote = (good, bad, "a") if i % 4 < 2 else (bad, good, "b")
        store.feedback.record_comparison(a, b, user, vote, mode="samples")
    return answers


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, hf_base_dir):
    from models.embedded import embedded_model_path
    from models.llamacpp import LlamaCppChatModel

    data = data_dir_with_base(tmp_path_factory.mktemp("gate"), hf_base_dir)
    config = cycle_config(
        data,
        reward_overrides=dict(REWARD),
        policy_overrides=dict(POLICY),
        gate=GateConfig(),  # the product's default gate
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        replay="text",
    )
    store = FeedbackStore(config.db_path)
    model = LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=2)  # its own: the session's
    try:  # shared one may have been swapped out by an earlier test
        answers = seed_votes(store, model, n_prompts=160)  # about 20 held out: the gate's evidence
    finally:
        model.close()
    run = store.runs.start("test", config.to_dict())
    code = run_cycle_for(config, run.id)
    yield {"store": store, "config": config, "run": store.runs.get(run.id), "code": code, "answers": answers}
    store.close()


def test_a_genuinely_improved_candidate_is_deployed(cycle):
    run = cycle["run"]
    assert cycle["code"] == 0 and run.status == "succeeded", run.error
    assert run.decision == "deployed", run.reasons
    checks = {c["name"]: c for c in run.metrics["gate_checks"]}
    assert checks["win rate"]["verdict"] == "pass" and checks["win rate"]["low"] > 0.5
    assert checks["facts"]["verdict"] == "pass" and checks["facts"]["n"] >= 64
    candidate = cycle["store"].versions.get(run.candidate_version_id)
    assert candidate.status == "deployed"
    assert candidate.metrics["ptx_coef"] == cycle["config"].ptx_coef > 0  # with the replay term, by default


def test_a_damaged_adapter_is_rejected(cycle, hf_base_dir):
    """DPO on the opposite preference (rude replies chosen over the base's own answers), judged by the
    cycle's reward model."""
    from models.embedded import embedded_model_path
    from models.lora_export import export_peft_lora_to_gguf
    from trainers.dpo import DPOTrainConfig, train_dpo
    from trainers.gate_eval import evaluate_candidate
    from trainers.progress import Stages
    from trainers.run import latest_reward_model

    store, config = cycle["store"], cycle["config"]
    inverted = [
        PreferencePair(prompt=[{"role": "user", "content": q}], chosen=rude(topic), rejected=answer)
        for q, topic, answer in cycle["answers"]
    ]
    out = config.data_dir / "adapters" / "damaged"
    train_dpo(
        DPOTrainConfig(
            output_dir=str(out),
            base_model_dir=str(hf_base_dir),
            threads=2,
            lora_layers=config.lora_layers,
            **POLICY,
        ),
        inverted,
    )
    export_peft_lora_to_gguf(out, out / "adapter.gguf", base_gguf=embedded_model_path())
    base = store.versions.ensure_base(embedded_model_path().name)
    damaged = store.versions.register_candidate(
        base.base_model,
        adapter_path=out,
        gguf_adapter_path=out / "adapter.gguf",
        parent_id=base.id,
        method="dpo",
    )
    result = evaluate_candidate(
        config,
        store,
        embedded_model_path(),
        damaged,
        base,
        base,
        {},  # no KL measured: the rule must reject on the evidence it has
        latest_reward_model(config.data_dir),
        Stages(None, None),
        threads=2,
    )
    assert result.decision == "reject", result.reasons
    win = next(c for c in result.checks if c.name == "win rate")
    assert win.verdict == "fail" and win.high < 0.5
