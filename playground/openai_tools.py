"""Tool calling for the OpenAI-compatible API, on models that were never trained for it: the request's
tools become instructions in the system prompt plus a JSON Schema the reply must match (enforced by
the backend, a llama.cpp grammar), and the reply's JSON becomes OpenAI ``tool_calls``.

The reply's shape, which the model is told and the grammar enforces:

- a call: ``{"name": "<one of the tools>", "arguments": {<that tool's parameters schema>}}``, returned as
  ``tool_calls`` (one call per reply) with finish_reason "tool_calls";
- with ``tool_choice`` "auto" the reply may instead be ``{"content": "<plain answer>"}``, returned as a
  normal message whose content is that answer;
- "required" allows only calls; a named function (or ``allowed_tools``) narrows the tools; "none" leaves
  the tools out of the prompt and the reply is plain text.

A reply cut by max_tokens cannot be decoded: it comes back as text with finish_reason "length".

History: an assistant message's ``tool_calls`` are shown to the model in the same JSON form, one call per
line after its text; a ``tool`` message (it must answer a call of an earlier assistant message) becomes
a user message "Result of <name> (call <id>): <content>", consecutive results joined in one. The model
layer and the store know only system, user and assistant messages, so that is also how they are stored.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from models.base import ChatMessage
from playground.messages import split_system, with_system
from playground.openai_types import Message, Tool, ToolChoiceObject

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}


class ToolRequestError(ValueError):
    """A request whose tools or tool messages cannot be used; ``param`` names the request field."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }
        return call if index is None else {"index": index, **call}


@dataclass(frozen=True)
class Decoded:
    """A reply read back: a call, or the plain answer of the "auto" shape (neither: show the raw text)."""

    call: ToolCall | None = None
    content: str | None = None


@dataclass(frozen=True)
class ToolPlan:
    """The tools a reply may call and whether it may answer without one."""

    tools: tuple[tuple[str, str, dict[str, Any]], ...]  # (name, description, parameters schema)
    mode: Literal["auto", "required"]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.tools]

    def schema(self) -> dict[str, Any]:
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for name, _, parameters in self.tools
        ]
        shapes = calls + ([ANSWER_SCHEMA] if self.mode == "auto" else [])
        return shapes[0] if len(shapes) == 1 else {"anyOf": shapes}

    def instructions(self) -> str:
        listed = json.dumps(
            [
                {"name": name, "description": description, "parameters": parameters}
                for name, description, parameters in self.tools
            ],
            ensure_ascii=False,
        )
        lines = [
            f"You can call these tools (JSON): {listed}",
            'To call a tool, reply with only a JSON object: {"name": "<tool name>", "arguments": {<its '
            "arguments>}}.",
        ]
        if self.mode == "auto":
            lines.append('To answer without a tool, reply with only {"content": "<your answer>"}.')
        elif len(self.tools) == 1:
            lines.append(f"Answer by calling {self.tools[0][0]}.")
        else:
            lines.append("Answer by calling one of the tools.")
        return "\n".join(lines)

    def decode(self, text: str) -> Decoded:
        try:
            value = json.loads(text)
        except ValueError:
            return Decoded()
        if not isinstance(value, dict):
            return Decoded()
        if value.get("name") in self.names and isinstance(value.get("arguments"), dict):
            return Decoded(call=ToolCall(value["name"], value["arguments"]))
        if self.mode == "auto" and isinstance(value.get("content"), str):
            return Decoded(content=value["content"])
        return Decoded()


def plan_tools(tools: list[Tool] | None, choice: str | ToolChoiceObject | None) -> ToolPlan | None:
    """The plan for a request's ``tools`` and ``tool_choice`` (None: answer in plain text)."""
    if not tools:
        if choice not in (None, "none"):
            raise ToolRequestError("tool_choice", "tool_choice needs tools; send 'tools' or drop tool_choice")
        return None
    specs: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for i, tool in enumerate(tools):
        f = tool.function
        if f.name in specs:
            raise ToolRequestError("tools", f"tools[{i}]: two tools are named {f.name!r}")
        parameters = NO_ARGUMENTS if f.parameters is None else f.parameters
        specs[f.name] = (f.name, f.description or "", parameters)
    if choice == "none":
        return None
    if choice is None or isinstance(choice, str):
        return ToolPlan(tuple(specs.values()), "required" if choice == "required" else "auto")
    mode: Literal["auto", "required"] = "required"
    if choice.function is not None:
        wanted = [choice.function.name]
    else:
        assert choice.allowed_tools is not None
        wanted, mode = [t.function.name for t in choice.allowed_tools.tools], choice.allowed_tools.mode
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise ToolRequestError(
            "tool_choice", f"tool_choice names {unknown[0]!r}, which is not in tools ({', '.join(specs)})"
        )
    return ToolPlan(tuple(specs[name] for name in dict.fromkeys(wanted)), mode)


def with_instructions(messages: list[ChatMessage], plan: ToolPlan) -> list[ChatMessage]:
    """The messages with the tools described at the end of the system prompt (or in a new one)."""
    text = plan.instructions()
    system, rest = split_system(messages)
    return with_system(f"{system}\n\n{text}" if system else text, rest)


def render_history(messages: list[Message]) -> list[tuple[str, str]]:
    """(role, text) per model-facing message: tool calls and tool results as the module docstring says."""
    calls: dict[str, str] = {}  # tool_call_id -> function name, from the assistant messages so far
    out: list[tuple[str, str]] = []
    previous_was_tool = False
    for i, m in enumerate(messages):
        if m.role == "tool":
            assert m.tool_call_id is not None
            if m.tool_call_id not in calls:
                raise ToolRequestError(
                    "messages",
                    f"messages[{i}]: a message with role 'tool' must answer a tool call of an earlier "
                    f"assistant message, and none has the id {m.tool_call_id!r}",
                )
            text = f"Result of {calls[m.tool_call_id]} (call {m.tool_call_id}): {m.content}"
            if previous_was_tool:
                out[-1] = ("user", f"{out[-1][1]}\n\n{text}")
            else:
                out.append(("user", text))
            previous_was_tool = True
            continue
        previous_was_tool = False
        role = "system" if m.role == "developer" else m.role  # OpenAI's newer name for the system role
        text = m.content if m.content is not None else (m.refusal or "")
        if m.tool_calls:
            lines = [text] if text else []
            for j, call in enumerate(m.tool_calls):
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError:
                    raise ToolRequestError(
                        "messages", f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON"
                    ) from None
                calls[call.id] = call.function.name
                lines.append(
                    json.dumps({"name": call.function.name, "arguments": arguments}, ensure_ascii=False)
                )
            text = "\n".join(lines)
        out.append((role, text))
    return out
