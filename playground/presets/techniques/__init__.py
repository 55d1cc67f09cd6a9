"""The technique registry: for each technique, its options model, the placeholders its template must
and may contain, whether it uses examples, and the function that runs it.

A technique's ``run(ctx, conversation)`` builds prompts with pure helpers, calls the model only
through ``ctx`` (a ``RunContext``), and ends with ``ctx.finish(answer, result)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from playground.presets.techniques import basic, cot, defended, generated_knowledge, react, self_consistency


@dataclass(frozen=True)
class Technique:
    key: str
    label: str
    options: type[BaseModel]
    run: Callable
    required: frozenset[str] = frozenset({"question"})  # template placeholders it must contain
    allowed: frozenset[str] = frozenset({"question"})  # ... and may contain
    examples: str = "none"  # "none" | "optional" | "required"
    needs_reasoning: bool = False  # examples must carry a worked reasoning
    check_template: Callable[[str], None] | None = None
    default_template: str = "{question}"


TECHNIQUES: dict[str, Technique] = {
    t.key: t
    for t in (
        Technique("zero_shot", "Zero-shot", basic.NoOptions, basic.run_zero_shot),
        Technique("few_shot", "Few-shot", basic.NoOptions, basic.run_few_shot, examples="required"),
        Technique(
            "zero_shot_cot",
            "Zero-shot chain-of-thought",
            cot.ZeroShotCotOptions,
            cot.run_zero_shot_cot,
            allowed=frozenset({"question", "trigger"}),
        ),
        Technique(
            "few_shot_cot",
            "Few-shot chain-of-thought",
            cot.FewShotCotOptions,
            cot.run_few_shot_cot,
            examples="required",
            needs_reasoning=True,
        ),
        Technique(
            "self_consistency",
            "Self-consistency",
            self_consistency.SelfConsistencyOptions,
            self_consistency.run_self_consistency,
            allowed=frozenset({"question", "trigger"}),
            examples="optional",
            needs_reasoning=True,
        ),
        Technique(
            "generated_knowledge",
            "Generated knowledge",
            generated_knowledge.GeneratedKnowledgeOptions,
            generated_knowledge.run_generated_knowledge,
            required=frozenset({"question", "knowledge"}),
            allowed=frozenset({"question", "knowledge"}),
            default_template="Facts:\n{knowledge}\n\nUse the facts above if they help.\nQuestion: {question}\nAnswer:",
        ),
        Technique(
            "react",
            "ReAct with tools",
            react.ReactOptions,
            react.run_react,
            examples="optional",
            needs_reasoning=True,  # the worked trajectory: Thought / Action / Observation lines
            default_template="Question: {question}",
        ),
        Technique(
            "defended",
            "Injection-defended template",
            defended.DefendedOptions,
            defended.run_defended,
            required=frozenset({"question", "instruction", "open", "close", "reminder"}),
            allowed=frozenset({"question", "instruction", "open", "close", "reminder"}),
            check_template=defended.check_template,
            default_template=defended.DEFAULT_TEMPLATE,
        ),
    )
}
