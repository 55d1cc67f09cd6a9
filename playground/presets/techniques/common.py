"""Pieces every technique shares: the conversation split into system / history / question, the
template filler, and few-shot examples as chat turns. Pure; no model."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.base import ChatMessage
from playground.messages import split_system, with_system

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def placeholders(template: str) -> list[str]:
    return PLACEHOLDER.findall(template)


def require_placeholders(template: str, *names: str, hint: str = "") -> str:
    """``template`` when it has a ``{name}`` for each of ``names``, else a ValueError naming the missing
    ones (then ``hint``): the check of an option's template, for a pydantic validator."""
    found = set(placeholders(template))
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError("must contain " + " and ".join("{" + name + "}" for name in missing) + hint)
    return template


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` placeholders in one pass: text substituted in is never scanned again, so a
    question containing ``{facts}`` stays literal. Unknown names are left as written."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True)
class Conversation:
    """A chat as a technique sees it: the system prompt, earlier turns, and the question to answer."""

    system: str | None
    history: tuple[ChatMessage, ...]
    question: str

    @classmethod
    def from_messages(cls, messages: Sequence[ChatMessage]) -> Conversation:
        system, msgs = split_system(list(messages))
        if not msgs or msgs[-1]["role"] != "user":
            raise ValueError("a preset needs a conversation that ends with a user message")
        if any(m["role"] == "system" for m in msgs):
            raise ValueError("only the first message may be a system message")
        return cls(
            system,
            tuple(ChatMessage(role=m["role"], content=m["content"]) for m in msgs[:-1]),
            msgs[-1]["content"],
        )

    def messages(
        self,
        user: str,
        *,
        examples: Sequence[ChatMessage] = (),
        system: str | None = None,
        after: Sequence[ChatMessage] = (),
    ) -> list[ChatMessage]:
        """system (the conversation's unless given) + examples + history + ``user`` + ``after``."""
        return with_system(
            self.system if system is None else system,
            [*examples, *self.history, ChatMessage(role="user", content=user), *after],
        )


def example_turns(pairs: Sequence[tuple[str, str]]) -> list[ChatMessage]:
    """Few-shot examples as earlier (user, assistant) turns: how chat models learn a format best."""
    turns: list[ChatMessage] = []
    for question, answer in pairs:
        turns.append(ChatMessage(role="user", content=question))
        turns.append(ChatMessage(role="assistant", content=answer))
    return turns
