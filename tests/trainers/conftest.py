"""Fixtures for training tests: the embedded model dequantized once per session, and synthetic feedback
with a clear preference (polite, on-topic replies over rude ones)."""

from __future__ import annotations

import random

import pytest

from trainers.data import PreferencePair, PromptRecord, UnpairedExample

TOPICS = [
    "the weather",
    "my homework",
    "a recipe for soup",
    "the news",
    "a good movie",
    "my cat",
    "gardening",
    "a trip to Paris",
    "learning Python",
    "the museum",
    "the ocean",
    "bicycles",
    "coffee",
    "the moon",
    "chess",
    "music lessons",
    "a birthday party",
    "winter clothes",
    "the library",
    "running",
]


def polite(topic: str) -> str:
    return (
        f"Happy to help! Here is a short, friendly note about {topic}: it is interesting and worth exploring."
    )


def rude(topic: str) -> str:
    return f"No. {topic} is boring. Go away and stop asking me."


def synthetic_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        prompt = [{"role": "user", "content": f"Tell me something about {topic}. (#{i})"}]
        pairs.append(
            PreferencePair(
                prompt=prompt,
                chosen=polite(topic),
                rejected=rude(topic),
                user_id=f"u{i % 5}",
                created_at=f"2026-11-{1 + i % 20:02d}T00:00:00+00:00",
                source="vote",
            )
        )
    return pairs


def synthetic_unpaired(n: int, seed: int = 0) -> list[UnpairedExample]:
    out = []
    for p in synthetic_pairs(n // 2, seed):
        out.append(UnpairedExample(prompt=p.prompt, completion=p.chosen, label=True, user_id=p.user_id))
        out.append(UnpairedExample(prompt=p.prompt, completion=p.rejected, label=False, user_id=p.user_id))
    return out


def synthetic_prompts(n: int) -> list[PromptRecord]:
    return [PromptRecord(prompt=p.prompt) for p in synthetic_pairs(n, seed=1)]


@pytest.fixture(scope="session")
def hf_base(hf_base_dir):
    return hf_base_dir


@pytest.fixture(scope="session")
def trained_reward_model(hf_base, tmp_path_factory):
    """A reward model trained once per session on the synthetic preference (shared by RL and best-of-n)."""
    from trainers.reward import RewardTrainConfig, train_reward_model

    out = tmp_path_factory.mktemp("rm") / "reward"
    config = RewardTrainConfig(
        output_dir=str(out),
        base_model_dir=str(hf_base),
        max_length=96,
        learning_rate=3e-4,
        num_epochs=2,
        lora_targets=("q_proj", "v_proj"),
        threads=2,
    )
    pairs = synthetic_pairs(48)
    return train_reward_model(config, pairs[:32], heldout=pairs[32:])


def seed_feedback(store, n_prompts: int = 24, thumbs: bool = True, seed: int = 0) -> int:
    """Conversations with a polite and a rude reply each, an A/B vote for the polite one, and thumbs —
    written through the store API the UI uses. Returns the base version id."""
    from feedback_store.store import AssistantTurn
    from models.embedded import embedded_model_path

    rng = random.Random(seed)
    base = store.versions.ensure_base(embedded_model_path().name)
    for i in range(n_prompts):
        topic = TOPICS[i % len(TOPICS)]
        user = f"user{i % 6}"
        conv = store.create_conversation(user, source="compare")
        question = store.add_message(conv, "user", f"Tell me something about {topic}. (#{i})")
        good = store.add_assistant_message(
            conv, question, AssistantTurn(content=polite(topic), model_version_id=base.id)
        )
        bad = store.add_assistant_message(
            conv, question, AssistantTurn(content=rude(topic), model_version_id=base.id)
        )
        a, b, vote = (good, bad, "a") if rng.random() < 0.5 else (bad, good, "b")
        store.feedback.record_comparison(a, b, user, vote, mode="samples")
        if thumbs:
            store.feedback.record_feedback(good, user, thumbs=1)
            store.feedback.record_feedback(bad, user, thumbs=-1)
    return base.id
