"""The one place a system message is put in front of the messages a model sees, and taken off again.

The Chat tab, Compare, Rank, the Prompt lab, the prompt techniques, the moderation judge and the
``/v1`` API's tool instructions all build their prompts with ``with_system``, so a system prompt is
treated the same everywhere: stripped of its outer white space, and left out when it is blank.
A leaf module (it imports nothing of ours but ``models.base``): the prompt techniques use it, and the
reply service above them does too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from models.base import ChatMessage


def with_system(system: str | None, messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """``messages`` after a system message holding ``system`` (stripped); none when it is blank."""
    head = [ChatMessage(role="system", content=system.strip())] if system and system.strip() else []
    return [*head, *messages]


def split_system(messages: Sequence[ChatMessage]) -> tuple[str | None, list[ChatMessage]]:
    """The first message's text when it is a system message (else None), and the messages after it."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)
