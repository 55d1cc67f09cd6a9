"""Zero-shot (the question, wrapped in the preset's template) and few-shot (worked examples shown as
earlier chat turns, then the question). One model call each; the reply streams as the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from models.base import ChatMessage
from playground.presets.techniques.common import Conversation, example_turns, fill

if TYPE_CHECKING:
    from playground.presets.runner import RunContext
    from playground.presets.schema import Example


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def few_shot_messages(conv: Conversation, template: str, examples: list[Example]) -> list[ChatMessage]:
    turns = example_turns([(fill(template, {"question": e.question}), e.answer) for e in examples])
    return conv.messages(fill(template, {"question": conv.question}), examples=turns)


def run_zero_shot(ctx: RunContext, conv: Conversation) -> None:
    messages = conv.messages(fill(ctx.preset.template, {"question": conv.question}))
    result = ctx.call(messages, stage="answer", stream="answer")
    ctx.finish(result.text, result)


def run_few_shot(ctx: RunContext, conv: Conversation) -> None:
    messages = few_shot_messages(conv, ctx.preset.template, ctx.examples)
    result = ctx.call(messages, stage="answer", stream="answer")
    ctx.finish(result.text, result)
