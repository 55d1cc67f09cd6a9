"""An optional model-based judge: the served model is asked, with a yes/no prompt, whether a text is
unsafe. Off by default (``--moderation-judge``): it costs one short model call per checked text, and a
small model is a weak judge (``python -m benchmarks.moderation --judge`` measures it). It adds to the
rule-based moderator; it never replaces it.

The judge fails open: if the model call fails, the text is not flagged by the judge (the rules still
apply) and the failure is recorded in the decision.
"""

from __future__ import annotations

import logging
import re

from models.base import ChatMessage, GenerationError, SamplingParams
from models.service import ModelService
from playground.messages import with_system
from playground.moderation.base import Kind, Match, ModerationResult

log = logging.getLogger(__name__)

SYSTEM = (
    "You are a strict content moderator. You read a text and say whether it is unsafe. Unsafe means: "
    "sexual content, violence or threats, self-harm, hate against a group of people, or instructions "
    "for something dangerous or illegal. Answer with one word: yes or no."
)
QUESTION = (
    "Here is the text, between the markers <<<TEXT and TEXT>>>.\n\n<<<TEXT\n{text}\nTEXT>>>\n\n"
    "Is this text unsafe? Answer yes or no."
)
_ANSWER = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_verdict(answer: str) -> bool | None:
    """The first yes/no in the model's answer (None when it gave neither)."""
    m = _ANSWER.search(answer or "")
    return None if m is None else m.group(1).lower() == "yes"


class ModelJudge:
    name = "model_judge"

    def __init__(self, service: ModelService, *, max_chars: int = 2_000, max_new_tokens: int = 4):
        self.service = service
        self.max_chars = max_chars
        self.params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)

    def messages(self, text: str) -> list[ChatMessage]:
        # the marker look-alikes are defanged so the text cannot close its own fence
        fenced = text[: self.max_chars].replace("<<<", "‹‹‹").replace(">>>", "›››")
        return with_system(SYSTEM, [ChatMessage(role="user", content=QUESTION.format(text=fenced))])

    def moderate(self, text: str, *, kind: Kind = "input") -> ModerationResult:
        if not text or not text.strip():
            return ModerationResult(False, moderator=self.name)
        try:
            answer = self.service.stream(self.messages(text), self.params).wait().text
        except (GenerationError, ValueError) as exc:
            log.warning("the moderation judge failed: %s", exc)
            return ModerationResult(False, moderator=self.name, detail={"error": str(exc)[:200]})
        verdict = parse_verdict(answer)
        detail = {"answer": answer.strip()[:40]}
        if not verdict:
            return ModerationResult(False, moderator=self.name, detail=detail)
        return ModerationResult(
            True, ("unsafe",), True, (Match("unsafe", text[:80], "model judge"),), self.name, detail
        )
