"""How a preset run looks in the Chatbot: trace entries become collapsible "thought" messages
(Gradio metadata titles, nested under one parent per reply) shown before the answer. Pure functions
on plain dicts: the session calls ``trace_rows`` when it renders, the Chat tab calls ``apply_event``
while a run streams."""

from __future__ import annotations

import re
from typing import Any

from playground.presets.events import Event

ICONS = {
    "thought": "💭",
    "tool_call": "🛠️",
    "observation": "👁️",
    "sample": "🎲",
    "vote": "🗳️",
    "notice": "⚠️",
    "model_call": "📨",
}


def apply_event(turn: Any, event: Event) -> None:
    """Fold one event into a streaming reply (an object with ``content`` and an ``info`` dict)."""
    if event.kind == "answer":
        turn.content = event.answer_after(turn.content)
    elif event.kind == "partial":
        pending = turn.info.get("pending")
        if not pending or pending.get("title") != event.title:
            pending = turn.info["pending"] = {"title": event.title, "text": ""}
        pending["text"] += event.text
    else:
        turn.info.pop("pending", None)
        turn.info.setdefault("trace", []).append(event.to_dict())


def fenced(text: str) -> str:
    """``text`` in a code block whose fence no backtick run inside it can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _entry_body(entry: dict[str, Any]) -> str:
    kind = entry.get("type")
    text = str(entry.get("text", ""))
    if kind == "tool_call":
        return fenced(text)
    if kind == "observation":
        return fenced(text)
    if kind == "model_call":
        prompt = entry.get("prompt")
        head = (
            f"Prompt: the same as model call {entry['prompt_same_as_call']}."
            if prompt is None
            else "Prompt (exactly as sent):\n" + fenced(str(prompt))
        )
        meta = (
            f"{entry.get('prompt_tokens', '?')} prompt tokens · {entry.get('completion_tokens', '?')} new tokens · "
            f"{entry.get('total_ms', 0) / 1000:.1f} s · finish: {entry.get('finish_reason', '?')} · "
            f"temperature {entry.get('temperature')} · seed {entry.get('seed')}"
        )
        return f"{meta}\n\n{head}\n\nOutput:\n{fenced(text)}"
    return text or "(empty)"


def has_visible_trace(info: dict[str, Any]) -> bool:
    """Plain zero-shot replies look as they always did; every other technique shows its trace."""
    if info.get("technique") == "zero_shot":
        return False
    return bool(info.get("trace") or info.get("pending"))


def trace_rows(info: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Chatbot messages showing one reply's trace (none for a plain reply): a parent titled with the
    preset, its steps nested under it, and the exact prompts nested one level deeper."""
    if not has_visible_trace(info):
        return []
    trace = info.get("trace") or []
    pending = info.get("pending")
    calls = [e for e in trace if e.get("type") == "model_call"]
    steps = [e for e in trace if e.get("type") != "model_call"]
    name = info.get("preset_name") or "Preset"
    status = "pending" if info.get("streaming") else "done"
    rows: list[dict[str, Any]] = [
        {
            "role": "assistant",
            "content": (
                f"Running… {len(steps)} step(s), {len(calls)} model call(s) so far."
                if status == "pending"
                else f"{len(steps)} step(s), {len(calls)} model call(s). Open the entries below."
            ),
            "metadata": {"title": f"🔎 Trace · {name}", "id": key, "status": status},
        }
    ]
    for i, entry in enumerate(steps):
        icon = ICONS.get(entry.get("type", ""), "•")
        rows.append(
            {
                "role": "assistant",
                "content": _entry_body(entry),
                "metadata": {
                    "title": f"{icon} {entry.get('title') or entry.get('type')}",
                    "id": f"{key}-s{i}",
                    "parent_id": key,
                    "status": "done",
                },
            }
        )
    if pending:
        rows.append(
            {
                "role": "assistant",
                "content": pending.get("text") or "…",
                "metadata": {
                    "title": f"⏳ {pending.get('title', 'working')}",
                    "id": f"{key}-pending",
                    "parent_id": key,
                    "status": "pending",
                },
            }
        )
    if calls:
        calls_key = f"{key}-calls"
        rows.append(
            {
                "role": "assistant",
                "content": "The exact prompt and raw output of every model call.",
                "metadata": {
                    "title": f"📨 Model calls ({len(calls)})",
                    "id": calls_key,
                    "parent_id": key,
                    "status": "done",
                },
            }
        )
        for i, entry in enumerate(calls):
            rows.append(
                {
                    "role": "assistant",
                    "content": _entry_body(entry),
                    "metadata": {
                        "title": entry.get("title") or f"Model call {i + 1}",
                        "id": f"{calls_key}-{i}",
                        "parent_id": calls_key,
                        "status": "done",
                    },
                }
            )
    return rows
