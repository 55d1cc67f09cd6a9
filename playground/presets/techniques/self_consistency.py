"""Self-consistency (Wang et al. 2022): sample several chain-of-thought replies at a temperature above
zero, extract each reply's answer, and take the majority vote. The answer shown is the full reply of
the first sample that voted for the winner; the trace holds every sample and the vote distribution.

With worked examples (question, reasoning, answer) the samples use few-shot CoT prompting; without,
the zero-shot CoT trigger.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from playground.presets.answers import answer_key, extract_answer, majority_vote
from playground.presets.techniques.common import Conversation, fill
from playground.presets.techniques.cot import (
    DEFAULT_ANSWER_FORMAT,
    DEFAULT_TRIGGER,
    AnswerFormat,
    cot_example_turns,
    with_trigger,
)

if TYPE_CHECKING:
    from playground.presets.runner import RunContext


class SelfConsistencyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(5, ge=2, le=16, description="chain-of-thought replies to sample and vote over")
    trigger: str = Field(DEFAULT_TRIGGER, min_length=1, description="used when the preset has no examples")
    answer_format: AnswerFormat = DEFAULT_ANSWER_FORMAT
    sample_temperature: float = Field(
        0.7, gt=0, le=2, description="used when the chosen temperature is 0 (greedy samples would all agree)"
    )


def vote_summary(counts: dict[str, int], valid: int, total: int) -> str:
    lines = [f"- **{answer or '(empty)'}**: {n} of {valid}" for answer, n in counts.items()]
    if valid < total:
        lines.append(f"- (no answer found): {total - valid}")
    return "\n".join(lines)


def run_self_consistency(ctx: RunContext, conv: Conversation) -> None:
    opts: SelfConsistencyOptions = ctx.preset.options
    template = ctx.preset.template
    if ctx.examples:
        turns = cot_example_turns(template, opts.answer_format, ctx.examples)
        messages = conv.messages(fill(template, {"question": conv.question}), examples=turns)
    else:
        messages = conv.messages(with_trigger(template, conv.question, opts.trigger))
    params = ctx.params
    if params.greedy:
        ctx.notice(
            f"Self-consistency needs varied samples: temperature 0 was raised to {opts.sample_temperature}."
        )
        params = replace(params, temperature=opts.sample_temperature)
    first_seed = params.seed if params.seed is not None else random.randrange(2**32)
    params_list = [replace(params, seed=(first_seed + i) % 2**32) for i in range(opts.samples)]

    results, keys = [], []
    for i, result in ctx.call_many(messages, params_list, stage="sample"):
        key = answer_key(result.text)
        results.append(result)
        keys.append(key)
        ctx.emit(
            "sample",
            result.text.strip(),
            title=f"Sample {i + 1}: {key or '(no answer)'}",
            index=i,
            answer=extract_answer(result.text),
            key=key,
            seed=result.params.seed,
        )
    vote = majority_vote(keys)
    winner_votes = vote.counts.get(vote.winner, 0) if vote.winner is not None else 0
    ctx.emit(
        "vote",
        vote_summary(vote.counts, vote.valid, vote.total),
        title=f"Vote: {vote.winner or '(none)'} ({winner_votes} of {vote.total})",
        counts=vote.counts,
        winner=vote.winner,
        total=vote.total,
        valid=vote.valid,
    )
    if vote.winner is None:
        ctx.notice("No sample stated an answer; the first sample is shown.")
        chosen = 0
    else:
        chosen = keys.index(vote.winner)
    ctx.finish(results[chosen].text, results[chosen])
