"""Per-browser-session chat state and the pure logic behind the Chat tab's buttons.

The session's ``turns`` are the source of truth; the Chatbot component only shows them. Every turn
knows its database message id, so feedback, retries and edits can point at stored rows. Nothing here
touches Gradio, the model or the database: it is unit-tested directly.

A stored conversation comes back with ``restore``: the stored messages form a tree (a retry is a
sibling reply, an edit a sibling user message); the session shows the latest branch (root to the newest
message) and the next message continues from its end. The other branches stay in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.base import ChatMessage
from playground.messages import with_system
from playground.presets.display import trace_rows


class StoredTurn(Protocol):
    """What ``restore`` needs of a stored message (``feedback_store.records.StoredMessage`` has it)."""

    id: int
    parent_id: int | None
    role: str
    content: str
    model_version_id: int | None
    preset_id: str | None
    moderation: dict[str, Any] | None
    trace: Any


def latest_branch(messages: Sequence[StoredTurn]) -> list[StoredTurn]:
    """The path from the root to the newest message (highest id), oldest first."""
    if not messages:
        return []
    by_id = {m.id: m for m in messages}
    path: list[StoredTurn] = []
    seen: set[int] = set()
    node: StoredTurn | None = max(messages, key=lambda m: m.id)
    while node is not None and node.id not in seen:  # parents come first in the store: no cycles
        seen.add(node.id)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    return path[::-1]


def branch_count(messages: Sequence[StoredTurn]) -> int:
    """How many branches the tree has (its leaves)."""
    parents = {m.parent_id for m in messages}
    return sum(1 for m in messages if m.id not in parents)


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    message_id: int | None = None  # None while an assistant reply is still streaming
    info: dict[str, Any] = field(default_factory=dict)  # version, timings, notices, trace


@dataclass
class ChatSession:
    user_id: str = ""
    conversation_id: str | None = None
    turns: list[Turn] = field(default_factory=list)
    # chatbot index -> turn index. A reply's trace rows map to the reply's own turn: Gradio groups
    # consecutive assistant messages into one bubble and reports a like on it with the index of the
    # bubble's FIRST message, which is the first trace row. (Other display-only rows map to None.)
    index_map: list[int | None] = field(default_factory=list)

    # -- views ---------------------------------------------------------------------------------------
    def chatbot_messages(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = []
        self.index_map = []
        for i, turn in enumerate(self.turns):
            if turn.role == "assistant":
                for row in trace_rows(turn.info, key=f"trace-{i}"):
                    shown.append(row)
                    self.index_map.append(i)
            shown.append({"role": turn.role, "content": turn.content})
            self.index_map.append(i)
        return shown

    def model_messages(self, system_prompt: str | None) -> list[ChatMessage]:
        # An exchange the content filter refused stays on screen but never reaches the model.
        return with_system(
            system_prompt,
            (ChatMessage(role=t.role, content=t.content) for t in self.turns if not t.info.get("moderated")),
        )

    # -- navigation ----------------------------------------------------------------------------------
    def turn_index(self, chatbot_index: int | tuple[int, int] | list[int]) -> int | None:
        if isinstance(chatbot_index, (tuple, list)):
            chatbot_index = chatbot_index[0]
        if not isinstance(chatbot_index, int) or not 0 <= chatbot_index < len(self.index_map):
            return None
        return self.index_map[chatbot_index]

    @property
    def last_message_id(self) -> int | None:
        return self.turns[-1].message_id if self.turns else None

    @property
    def awaiting_reply(self) -> bool:
        return bool(self.turns) and self.turns[-1].role == "user"

    def parent_of(self, turn_index: int) -> int | None:
        return self.turns[turn_index - 1].message_id if turn_index > 0 else None

    # -- edits ---------------------------------------------------------------------------------------
    def add_user(self, content: str, message_id: int) -> None:
        self.turns.append(Turn("user", content, message_id))

    def cut_for_retry(self, turn_index: int) -> bool:
        """Keep turns up to the user message at or before ``turn_index``; True if a reply is due."""
        while turn_index >= 0 and self.turns[turn_index].role != "user":
            turn_index -= 1
        if turn_index < 0:
            return False
        del self.turns[turn_index + 1 :]
        return True

    def undo(self, turn_index: int) -> str:
        """Remove the user message at/before ``turn_index`` and everything after; return its text."""
        while turn_index >= 0 and self.turns[turn_index].role != "user":
            turn_index -= 1
        if turn_index < 0:
            return ""
        text = self.turns[turn_index].content
        del self.turns[turn_index:]
        return text

    def replace_user(self, turn_index: int, content: str, message_id: int) -> None:
        """An edited user message becomes a new branch: later turns are dropped."""
        del self.turns[turn_index:]
        self.turns.append(Turn("user", content, message_id))

    def reset(self) -> None:
        self.conversation_id = None
        self.turns = []
        self.index_map = []

    @classmethod
    def restore(
        cls,
        user_id: str,
        conversation_id: str,
        messages: Sequence[StoredTurn],
        *,
        shown: Callable[[StoredTurn], str] = lambda m: m.content,
        preset_info: Callable[[str | None], dict[str, Any]] = lambda _preset: {},
    ) -> ChatSession:
        """The session of a stored conversation, showing its latest branch. ``shown`` gives the text a
        reply was shown as (a withheld reply stays withheld); ``preset_info`` gives a preset's
        ``preset_name`` and ``technique`` (a plain zero-shot reply shows no trace)."""
        session = cls(user_id=user_id, conversation_id=conversation_id)
        for m in latest_branch([m for m in messages if m.role != "system"]):
            action = (m.moderation or {}).get("action")
            info: dict[str, Any] = {}
            if action in ("refused", "refusal"):  # a refused exchange is shown, never sent to the model
                info["moderated"] = True
            if m.role == "assistant":
                info.update(version_id=m.model_version_id, preset_id=m.preset_id)
                if m.trace:
                    info.update({"trace": m.trace, "preset_name": m.preset_id, **preset_info(m.preset_id)})
                session.turns.append(Turn("assistant", shown(m), m.id, info))
            else:
                session.turns.append(Turn(m.role, m.content, m.id, info))
        return session
