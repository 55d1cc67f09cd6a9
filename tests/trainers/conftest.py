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
def hf_base(tmp_path_factory):
    from models.embedded import embedded_model_path
    from trainers.base_model import ensure_hf_base

    return ensure_hf_base(embedded_model_path(), tmp_path_factory.mktemp("hf-base"))


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
