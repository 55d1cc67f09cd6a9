"""An OpenAI-compatible judge with a short written constitution, for RLAIF pairs.

Instead of the reward model, a user who has a stronger model behind an OpenAI-compatible server (vLLM,
llama.cpp's server, Ollama, a hosted API, or another playground's ``/v1``) can let it label the pairs:
``--train-ai-judge URL`` (``--train-ai-judge-model``, ``--train-ai-constitution FILE``, and the key in
the environment variable ``PLAYGROUND_TRAINING_AI_JUDGE_API_KEY`` or ``--train-ai-judge-api-key``; the
key is never stored with the run, it reaches the training process through its environment). The judge sees the
constitution (the shipped ``trainers/prompts/constitution.txt`` unless a file is given), the question and
the two replies, and answers in JSON (``{"reason": ..., "better": "A" | "B"}``; the request carries the
JSON schema as ``response_format`` for servers that enforce it).

Judges prefer whichever reply comes first (or second) more often than they should, so every pair is
judged twice, in both orders, and labelled only when both verdicts agree (as MT-Bench does); a pair
the judge cannot decide, or answers that do not parse, give no label and are counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from models.base import GenerationError, SamplingParams

KEY_ENV = "PLAYGROUND_TRAINING_AI_JUDGE_API_KEY"  # the settings' own variable for ai_judge_api_key

VERDICT_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 300}, "better": {"enum": ["A", "B"]}},
        "required": ["reason", "better"],
    }
)
JUDGE_PROMPT = """You compare two replies to a user's message. Principles:
{constitution}
User's message:
<<<
{question}
>>>
Reply A:
<<<
{a}
>>>
Reply B:
<<<
{b}
>>>
Which reply follows the principles better? Answer in JSON: {{"reason": "<one sentence>", "better": "A" or "B"}}"""


def default_constitution() -> str:
    return resources.files("trainers").joinpath("prompts/constitution.txt").read_text(encoding="utf-8")


def read_constitution(path: Path | None) -> str:
    """The constitution in ``path`` (None: the shipped one); a missing or empty file is a clear error."""
    if path is None:
        return default_constitution()
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the judge's constitution {path}: {exc}") from exc
    if not text:
        raise ValueError(f"the judge's constitution {path} is empty: write the principles, one per line")
    return text


def constitution_id(text: str) -> str:
    """A short hash that names the constitution a label was given under (stored with the label)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Verdict:
    """Both orders' answers: ``better`` is 0 (the first reply), 1 (the second) or None (no label)."""

    better: int | None
    why: str  # "agreed", "disagreed" (the order decided) or "unparsed"
    reasons: tuple[str, ...]


def parse_answer(text: str) -> tuple[str, str] | None:
    """("A" | "B", reason) from the judge's answer, or None when it holds no such JSON object."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        answer = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    better = answer.get("better") if isinstance(answer, dict) else None
    if not isinstance(better, str) or better.strip().upper() not in ("A", "B"):
        return None
    return better.strip().upper(), str(answer.get("reason", ""))[:300]


def combine(first: tuple[str, str] | None, swapped: tuple[str, str] | None) -> Verdict:
    """The verdict from the answer with the replies in order (first) and in swapped order."""
    reasons = tuple(a[1] for a in (first, swapped) if a is not None)
    if first is None or swapped is None:
        return Verdict(None, "unparsed", reasons)
    in_order = 0 if first[0] == "A" else 1
    from_swap = 1 if swapped[0] == "A" else 0
    if in_order != from_swap:
        return Verdict(None, "disagreed", reasons)
    return Verdict(in_order, "agreed", reasons)


class Judge:
    """Labels pairs through a model on an OpenAI-compatible server, under a constitution."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        constitution: str | None = None,
        max_new_tokens: int = 160,
    ):
        from models.openai_compat import OpenAICompatChatModel

        self.constitution = (constitution or default_constitution()).strip()
        self.client = OpenAICompatChatModel(url, model=model, api_key=api_key, max_concurrency=1)
        self.params = SamplingParams(
            temperature=0.0, max_new_tokens=max_new_tokens, json_schema=VERDICT_SCHEMA, seed=0
        )

    @property
    def name(self) -> str:
        return self.client.model_id

    @property
    def constitution_id(self) -> str:
        return constitution_id(self.constitution)

    def _ask(self, question: str, a: str, b: str) -> tuple[str, str] | None:
        prompt = JUDGE_PROMPT.format(constitution=self.constitution, question=question, a=a, b=b)
        try:
            text = self.client.generate([{"role": "user", "content": prompt}], self.params).text
        except GenerationError as exc:
            raise GenerationError(f"the judge at {self.client.base_url} failed: {exc}") from exc
        return parse_answer(text)

    def judge(self, question: str, first: str, second: str) -> Verdict:
        return combine(self._ask(question, first, second), self._ask(question, second, first))

    def close(self) -> None:
        self.client.close()
