"""What a preset run reports while it works: answer text to stream, and trace entries.

Kinds:
- ``answer``: a chunk of the final answer (stream it to the user).
- ``partial``: a chunk of an intermediate model output still being written (live display only).
- ``thought``: a finished intermediate text: reasoning, generated knowledge, a ReAct thought, an
  extracted answer.
- ``tool_call`` / ``observation``: a ReAct action and what the tool returned (or its error).
- ``sample`` / ``vote``: one self-consistency sample with its extracted answer; the vote distribution.
- ``model_call``: one finished model call: stage, exact prompt, output, timings.
- ``notice``: something the user should know (a loop stopped, a step limit, a fallback).

Every kind except ``answer`` and ``partial`` goes into the run's trace, which is stored with the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRACE_KINDS = ("thought", "tool_call", "observation", "sample", "vote", "model_call", "notice")
STREAM_KINDS = ("answer", "partial")


@dataclass(frozen=True)
class Event:
    kind: str
    text: str = ""
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TRACE_KINDS + STREAM_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    def answer_after(self, answer: str) -> str:
        """The answer so far once this event is applied: an ``answer`` chunk extends it, or rewrites it
        when marked ``replace`` (e.g. after answer extraction); every other kind leaves it as it was."""
        if self.kind != "answer":
            return answer
        return self.text if self.data.get("replace") else answer + self.text

    @property
    def in_trace(self) -> bool:
        return self.kind in TRACE_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable trace entry."""
        return {"type": self.kind, "title": self.title, "text": self.text, **self.data}
