"""Reward model on the embedded model: a clearly separable preference is learned (held-out > 0.8)."""

import pytest

from tests.trainers.conftest import synthetic_pairs
from trainers.common import TrainingDataError
from trainers.reward import RewardModel, RewardTrainConfig, pairwise_accuracy, train_reward_model

pytestmark = pytest.mark.slow


def test_reward_model_learns_a_separable_preference(trained_reward_model):
    metrics = trained_reward_model.metrics
    assert metrics["heldout_accuracy"] > 0.8
    assert metrics["heldout_margin"] > 0
    assert metrics["loss_curve"] and metrics["examples"] == 32
    assert (trained_reward_model.adapter_dir / "adapter_config.json").exists()
    assert (trained_reward_model.adapter_dir / "metrics.json").exists()


def test_reward_model_reloads_and_scores_like_training(trained_reward_model, hf_base):
    scorer = RewardModel.load(trained_reward_model.adapter_dir, hf_base, max_length=96)
    again = pairwise_accuracy(scorer, synthetic_pairs(48)[32:])
    assert again["heldout_accuracy"] == pytest.approx(trained_reward_model.metrics["heldout_accuracy"])
    good, bad = scorer.score(
        [[{"role": "user", "content": "Tell me about tea."}]] * 2,
        ["Happy to help! Tea is a lovely drink worth exploring.", "No. Go away."],
    )
    assert good > bad


def test_too_few_pairs_is_a_clear_error_and_writes_nothing(hf_base, tmp_path):
    config = RewardTrainConfig(output_dir=str(tmp_path / "rm"), base_model_dir=str(hf_base))
    with pytest.raises(TrainingDataError, match="12 preference pairs; the reward model needs at least 16"):
        train_reward_model(config, synthetic_pairs(12))
    assert not (tmp_path / "rm").exists()


def test_ranking_weights_change_the_loss(hf_base, tmp_path):
    """A weight-0 pair contributes nothing: training on [good pairs + flipped pairs with weight 0] still learns."""
    from dataclasses import replace

    pairs = synthetic_pairs(24)
    flipped = [replace(p, chosen=p.rejected, rejected=p.chosen, weight=0.0) for p in pairs[:16]]
    config = RewardTrainConfig(
        output_dir=str(tmp_path / "rm"),
        base_model_dir=str(hf_base),
        max_length=96,
        learning_rate=3e-4,
        num_epochs=1,
        lora_targets=("q_proj", "v_proj"),
        threads=2,
    )
    result = train_reward_model(config, pairs[:16] + flipped, heldout=pairs[16:])
    assert result.metrics["heldout_accuracy"] > 0.8


def test_same_data_and_seed_train_the_same_reward_model(hf_base, tmp_path):
    """The score head's and the LoRA's initial weights are seeded too (they are drawn before the Trainer
    seeds): two runs on the same pairs give the same model, so a gate's decision can be reproduced, and
    another seed gives another one."""
    from safetensors.torch import load_file

    def weights(name: str, seed: int = 0):
        config = RewardTrainConfig(
            output_dir=str(tmp_path / name),
            base_model_dir=str(hf_base),
            max_length=64,
            max_steps=1,
            batch_size=4,
            lora_targets=("q_proj", "v_proj"),
            threads=2,
            seed=seed,
        )
        train_reward_model(config, synthetic_pairs(16))
        return load_file(str(tmp_path / name / "adapter_model.safetensors"))

    first, again, other = weights("a"), weights("b"), weights("c", seed=1)
    assert first.keys() == again.keys() and any("score" in k for k in first)
    assert all((first[k] == again[k]).all() for k in first)
    assert any(not (first[k] == other[k]).all() for k in first)
