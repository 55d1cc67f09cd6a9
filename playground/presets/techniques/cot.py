"""Chain-of-thought, two ways.

- Zero-shot CoT (Kojima et al. 2022): the question plus a trigger ("Let's think step by step."); the
  reasoning is then fed back with an answer-extraction question, and that second reply is the answer.
- Few-shot CoT (Wei et al. 2022): worked examples (question, reasoning, answer) as earlier chat turns,
  then the question; the reply (reasoning ending in "The answer is ...") is the answer, and the
  extracted answer is shown in the trace.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from models.base import ChatMessage
from playground.presets.answers import extract_answer
from playground.presets.techniques.common import Conversation, example_turns, fill, require_placeholders

if TYPE_CHECKING:
    from playground.presets.runner import RunContext
    from playground.presets.schema import Example

DEFAULT_TRIGGER = "Let's think step by step."
DEFAULT_EXTRACTION = "Therefore, what is the final answer? Reply with the answer only, no explanation."
DEFAULT_ANSWER_FORMAT = "{reasoning} The answer is {answer}."


class ZeroShotCotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    trigger: str = Field(DEFAULT_TRIGGER, min_length=1, description="appended to the question")
    extraction_prompt: str = Field(
        DEFAULT_EXTRACTION, min_length=1, description="second step: asks for the answer"
    )
    answer_max_tokens: int = Field(64, ge=1, le=1024, description="token budget of the extraction step")


def _needs_both_parts(value: str) -> str:
    return require_placeholders(value, "answer", "reasoning")


# How an example's reasoning and answer are written (both must have a place in it).
AnswerFormat = Annotated[
    str,
    AfterValidator(_needs_both_parts),
    Field(description="how each example's reasoning and answer are written"),
]


class FewShotCotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    answer_format: AnswerFormat = DEFAULT_ANSWER_FORMAT


def with_trigger(template: str, question: str, trigger: str) -> str:
    """The first-step user message: the template with {trigger}, or the trigger appended."""
    if "{trigger}" in template:
        return fill(template, {"question": question, "trigger": trigger})
    return f"{fill(template, {'question': question})}\n\n{trigger}"


def extraction_messages(
    conv: Conversation, first_user: str, reasoning: str, extraction_prompt: str
) -> list[ChatMessage]:
    """Step two of zero-shot CoT: the model's own reasoning, then the answer-extraction question."""
    return conv.messages(
        first_user,
        after=[
            ChatMessage(role="assistant", content=reasoning),
            ChatMessage(role="user", content=extraction_prompt),
        ],
    )


def cot_example_turns(template: str, answer_format: str, examples: list[Example]) -> list[ChatMessage]:
    return example_turns(
        [
            (
                fill(template, {"question": e.question}),
                fill(answer_format, {"reasoning": e.reasoning.strip(), "answer": e.answer.strip()}),
            )
            for e in examples
        ]
    )


def run_zero_shot_cot(ctx: RunContext, conv: Conversation) -> None:
    opts: ZeroShotCotOptions = ctx.preset.options
    first_user = with_trigger(ctx.preset.template, conv.question, opts.trigger)
    reasoning = ctx.call(conv.messages(first_user), stage="reasoning", stream="partial")
    ctx.emit("thought", reasoning.text.strip(), title="Reasoning")
    params = replace(ctx.params, max_new_tokens=min(ctx.params.max_new_tokens, opts.answer_max_tokens))
    messages = extraction_messages(conv, first_user, reasoning.text.strip(), opts.extraction_prompt)
    answer = ctx.call(messages, params, stage="answer extraction", stream="answer")
    ctx.finish(answer.text, answer)


def run_few_shot_cot(ctx: RunContext, conv: Conversation) -> None:
    opts: FewShotCotOptions = ctx.preset.options
    turns = cot_example_turns(ctx.preset.template, opts.answer_format, ctx.examples)
    messages = conv.messages(fill(ctx.preset.template, {"question": conv.question}), examples=turns)
    result = ctx.call(messages, stage="answer", stream="answer")
    ctx.emit("thought", extract_answer(result.text), title="Extracted answer")
    ctx.finish(result.text, result)
