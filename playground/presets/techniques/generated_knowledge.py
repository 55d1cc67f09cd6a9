"""Generated knowledge prompting (Liu et al. 2022): first ask the model for facts relevant to the
question, then answer the question with those facts in the prompt. Two model calls; the facts are in
the trace and the second reply streams as the answer."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from playground.presets.techniques.common import Conversation, fill, require_placeholders

if TYPE_CHECKING:
    from playground.presets.runner import RunContext

DEFAULT_KNOWLEDGE_PROMPT = (
    "Write three short, true facts that are useful for answering the question below. "
    "Do not answer the question yet.\n\nQuestion: {question}\n\nFacts:"
)


class GeneratedKnowledgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    knowledge_prompt: str = Field(DEFAULT_KNOWLEDGE_PROMPT, description="step one; must contain {question}")
    knowledge_max_tokens: int = Field(160, ge=8, le=2048, description="token budget of the facts")

    @field_validator("knowledge_prompt")
    @classmethod
    def _needs_question(cls, value: str) -> str:
        return require_placeholders(value, "question")


def answer_message(template: str, question: str, knowledge: str) -> str:
    return fill(template, {"question": question, "knowledge": knowledge.strip() or "(none)"})


def run_generated_knowledge(ctx: RunContext, conv: Conversation) -> None:
    opts: GeneratedKnowledgeOptions = ctx.preset.options
    params = replace(ctx.params, max_new_tokens=min(ctx.params.max_new_tokens, opts.knowledge_max_tokens))
    facts = ctx.call(
        conv.messages(fill(opts.knowledge_prompt, {"question": conv.question})),
        params,
        stage="knowledge",
        stream="partial",
    )
    ctx.emit("thought", facts.text.strip(), title="Generated knowledge")
    messages = conv.messages(answer_message(ctx.preset.template, conv.question, facts.text))
    answer = ctx.call(messages, stage="answer", stream="answer")
    ctx.finish(answer.text, answer)
