"""Best-of-n rejection sampling (RAFT, Dong et al. 2023): sample n replies per prompt from the current
policy, keep the one the reward model scores highest, and fine-tune on those (SFT). The cheap baseline
every RL method should beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainers.common import TrainingDataError, TrainResult, load_policy, require, same_named, write_metrics
from trainers.data import Demonstration, PromptRecord
from trainers.progress import progress_among
from trainers.sft import SFTTrainConfig, train_sft


@dataclass
class BestOfNConfig(SFTTrainConfig):
    reward_adapter: str = ""
    n: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    min_examples: int = 4


def select_best(
    prompts: Sequence[PromptRecord], samples: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]
) -> list[tuple[PromptRecord, str, float]]:
    """The highest-scoring non-empty sample of each prompt (pure; ties keep the first)."""
    chosen = []
    for prompt, texts, values in zip(prompts, samples, scores, strict=True):
        candidates = [(v, i) for i, (t, v) in enumerate(zip(texts, values, strict=True)) if t.strip()]
        if candidates:
            best_value, best_index = max(candidates, key=lambda c: (c[0], -c[1]))
            chosen.append((prompt, texts[best_index], best_value))
    return chosen


def train_best_of_n(
    config: BestOfNConfig, prompts: Sequence[PromptRecord], callbacks: list | None = None
) -> TrainResult:
    require(
        len(prompts) >= config.min_examples,
        f"{len(prompts)} prompts; best-of-n needs at least {config.min_examples}.",
    )
    from trainers.evaluate import sample
    from trainers.reward import RewardModel

    reward_model = RewardModel.load(
        config.reward_adapter, config.base_model_dir, max_length=config.max_length
    )
    policy, tokenizer, _ = load_policy(config)
    progress = progress_among(callbacks)  # sampling takes about half of best-of-n's time, the steps the rest

    def sampled(done: int, total: int) -> None:
        if progress is not None:
            progress.report(f"sampled {done} of {total} replies ({config.n} per prompt)", done / total / 2)

    samples = sample(
        policy.eval(),
        tokenizer,
        [p.prompt for p in prompts],
        **same_named(config, "n", "max_new_tokens", "temperature", "seed"),
        on_batch=sampled,
    )
    del policy
    if progress is not None:
        progress.steps_within(0.5, 1.0)
    scores = [reward_model.score([p.prompt] * len(s), list(s)) for p, s in zip(prompts, samples, strict=True)]
    best = select_best(prompts, samples, scores)
    demos = [Demonstration(prompt=p.prompt, completion=text, user_id="best_of_n") for p, text, _ in best]
    if not demos:
        raise TrainingDataError("every sampled reply was empty; nothing to fine-tune on")
    result = train_sft(replace(config, min_examples=1), demos, method="best_of_n", callbacks=callbacks)
    flat = [v for row in scores for v in row]
    result.metrics.update(
        {
            "n": config.n,
            "mean_reward_samples": sum(flat) / len(flat),
            "mean_reward_selected": sum(v for _, _, v in best) / len(best),
        }
    )
    write_metrics(result.adapter_dir, result.metrics)
    return result
