"""Online RL from the reward model: TRL's RLOOTrainer on a LoRA adapter (the PPO-family method).

Why RLOO rather than GRPO: TRL 1.16 has no PPOTrainer. RLOO (Ahmadian et al. 2024) keeps what matters
from InstructGPT's PPO — the clipped surrogate (when ``num_iterations`` > 1) and a KL penalty to the
reference folded into the reward (reward - beta * KL, exactly InstructGPT's objective) — and replaces
the value network with a leave-one-out baseline over ``num_generations`` samples per prompt, which is
unbiased and cheap on a CPU. TRL's GRPO uses a group-normalised advantage and defaults to beta = 0 (no
KL term at all); RLOO's default keeps the KL penalty on. The reference is the base with the adapter
disabled, so no second model copy is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainers.common import (
    PolicyConfig,
    TrainingDataError,
    TrainResult,
    fit_policy,
    last_logged,
    mean_logged,
    require,
    same_named,
)
from trainers.data import PromptRecord, trl_rows


@dataclass
class RLTrainConfig(PolicyConfig):
    reward_adapter: str = ""
    """Directory of a trained reward-model adapter (``trainers.reward``)."""
    beta: float = 0.05
    """KL penalty coefficient (per-token KL to the reference, subtracted from the reward)."""
    num_generations: int = 4
    """Samples per prompt; the leave-one-out baseline of each is the mean reward of the others."""
    max_completion_length: int = 48
    temperature: float = 1.0
    learning_rate: float = 2e-5
    num_iterations: int = 1
    """Optimisation passes over each generated batch; > 1 makes the PPO clip (epsilon) active."""
    epsilon: float = 0.2
    min_examples: int = 4


def train_rl(
    config: RLTrainConfig, prompts: Sequence[PromptRecord], callbacks: list | None = None
) -> TrainResult:
    require(
        len(prompts) >= config.min_examples,
        f"{len(prompts)} prompts; RL needs at least {config.min_examples}.",
    )
    if not config.reward_adapter or not (Path(config.reward_adapter) / "adapter_config.json").exists():
        raise TrainingDataError(
            f"RL needs a trained reward model; {config.reward_adapter or '(none)'} is not one. "
            "Run `python launch.py train --method reward` first."
        )
    from trl import RLOOConfig, RLOOTrainer

    from trainers.reward import RewardModel

    reward_model = RewardModel.load(
        config.reward_adapter, config.base_model_dir, max_length=config.max_length
    )
    reward_model.__name__ = "reward_model"  # TRL names reward columns after the function

    def args(common):
        # RLOO counts completions per batch: make each step hold whole groups of num_generations.
        common["per_device_train_batch_size"] = max(config.batch_size, config.num_generations)
        return RLOOConfig(
            **common,
            **same_named(
                config,
                *(
                    "beta",
                    "num_generations",
                    "max_completion_length",
                    "temperature",
                    "num_iterations",
                    "epsilon",
                ),
            ),
        )

    def summarize(history, _trainer):
        return {
            "algorithm": "rloo",
            "reward_curve": [
                {"step": int(h["step"]), "reward": float(h["reward"])} for h in history if "reward" in h
            ],
            "kl_curve": [{"step": int(h["step"]), "kl": float(h["kl"])} for h in history if "kl" in h],
            "reward_mean": mean_logged(history, "reward"),
            "reward_last": last_logged(history, "reward"),
            "kl_last": last_logged(history, "kl"),
        }

    return fit_policy(
        "rl",
        config,
        RLOOTrainer,
        args,
        trl_rows(prompts),
        callbacks=callbacks,
        summarize=summarize,
        reward_funcs=[reward_model],
    )
