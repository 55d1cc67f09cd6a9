"""The running app's chat event, found from Gradio's ``/config``, and two ways to call it: Gradio's SSE
queue protocol spoken as the browser speaks it, and ``gradio_client``.

Nothing here knows the Chat tab's layout. The event is the first textbox ``submit`` whose chain of
``.then`` events ends in a generator that streams into exactly one chatbot (the Compare tab streams into
two). Each input of each event in that chain is filled from its component: states are held by the
server (None), the triggering textbox gets the message, a textbox labelled "system" the system prompt,
a slider labelled "temperature" 0 (greedy), one labelled "max ... tokens" the benchmark's limit, and
everything else its default value from the config. So adding, removing or reordering controls does not
break the benchmark; renaming the labels of those four would, and then ``find_chat_event`` says so.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Labels matched case-insensitively against the components' labels in the config.
SYSTEM_LABEL = re.compile(r"system", re.I)
TEMPERATURE_LABEL = re.compile(r"temperature", re.I)
MAX_TOKENS_LABEL = re.compile(r"max.*tokens", re.I)
# Sampling controls whose defaults the other paths copy, so every path samples alike.
SAMPLING_LABELS = {
    "top_p": re.compile(r"top[-_ ]?p\b", re.I),
    "top_k": re.compile(r"top[-_ ]?k\b", re.I),
    "repetition_penalty": re.compile(r"repe(tition|at) penalty", re.I),
}


class ChatEventNotFound(RuntimeError):
    """The app's config has no event this module recognises as "send a chat message"."""


@dataclass(frozen=True)
class Component:
    id: int
    type: str
    label: str | None
    default: Any
    skip_api: bool  # gr.State and the like: held by the server per session, dropped by gradio_client


@dataclass(frozen=True)
class Event:
    fn_index: int
    api_name: str | None
    inputs: tuple[Component, ...]
    outputs: tuple[Component, ...]
    generator: bool


@dataclass(frozen=True)
class ChatEvent:
    """The events one Enter in the chat box runs, in order; the last one streams the reply."""

    chain: tuple[Event, ...]
    message_id: int  # the textbox the user types into
    chatbot_id: int
    sampling_defaults: dict[str, float] = field(default_factory=dict)  # top_p, top_k, repetition_penalty

    @property
    def reply(self) -> Event:
        return self.chain[-1]

    def describe(self) -> str:
        names = " -> ".join(f"/{e.api_name}" for e in self.chain)
        labels = ", ".join(c.label or c.type for c in self.reply.inputs if not c.skip_api)
        return f"{names} (reply inputs: {labels})"

    def values(self, event: Event, message: str, system: str, max_tokens: int) -> list[Any]:
        """The input values for one event of the chain, in the config's order (states as None)."""
        out = []
        for c in event.inputs:
            label = c.label or ""
            if c.skip_api:
                out.append(None)
            elif c.id == self.message_id:
                out.append(message)
            elif c.type == "textbox" and SYSTEM_LABEL.search(label):
                out.append(system)
            elif TEMPERATURE_LABEL.search(label):
                out.append(0.0)
            elif MAX_TOKENS_LABEL.search(label):
                out.append(max_tokens)
            else:
                out.append(c.default)
        return out

    def api_values(self, event: Event, message: str, system: str, max_tokens: int) -> list[Any]:
        """The same values without the states, as gradio_client takes them."""
        values = self.values(event, message, system, max_tokens)
        return [v for c, v in zip(event.inputs, values, strict=True) if not c.skip_api]


def _components(config: dict) -> dict[int, Component]:
    return {
        c["id"]: Component(
            id=c["id"],
            type=c["type"],
            label=c.get("props", {}).get("label"),
            default=c.get("props", {}).get("value"),
            skip_api=bool(c.get("skip_api")) or c["type"] == "state",
        )
        for c in config["components"]
    }


def find_chat_event(config: dict) -> ChatEvent:
    """The chat event of an app, from its ``/config`` JSON (raises ChatEventNotFound with what it saw)."""
    comps = _components(config)
    deps = config["dependencies"]

    def event(d: dict) -> Event:
        return Event(
            fn_index=d["id"],
            api_name=d.get("api_name"),
            inputs=tuple(comps[i] for i in d["inputs"]),
            outputs=tuple(comps[i] for i in d["outputs"]),
            generator=bool(d.get("types", {}).get("generator")),
        )

    seen = []
    for d in deps:
        boxes = [t[0] for t in d.get("targets", []) if t[1] == "submit" and t[0] in comps]
        boxes = [b for b in boxes if comps[b].type == "textbox" and b in d["inputs"]]
        if not boxes or d.get("backend_fn") is False:
            continue
        chain, current = [d], d
        while not (current.get("types", {}).get("generator") and _chatbots(current, comps)):
            nxt = next((x for x in deps if x.get("trigger_after") == current["id"]), None)
            if nxt is None:
                break
            if nxt.get("backend_fn") is not False:  # a js-only step runs in the browser, not here
                chain.append(nxt)
            current = nxt
        chatbots = _chatbots(current, comps)
        seen.append(f"/{d.get('api_name')}: {len(chatbots)} chatbot output(s) at the end of its chain")
        if current.get("types", {}).get("generator") and len(chatbots) == 1:
            reply = event(current)
            defaults = {}
            for key, pattern in SAMPLING_LABELS.items():
                c = next((c for c in reply.inputs if pattern.search(c.label or "")), None)
                if c is not None and isinstance(c.default, int | float):
                    defaults[key] = c.default
            return ChatEvent(tuple(event(x) for x in chain), boxes[0], chatbots[0], defaults)
    raise ChatEventNotFound(
        "no textbox submit event that streams a reply into one chatbot; candidates: "
        + ("; ".join(seen) or "none")
    )


def _chatbots(dep: dict, comps: dict[int, Component]) -> list[int]:
    return [i for i in dep["outputs"] if comps[i].type == "chatbot"]


def reply_text(chat: Any) -> str:
    """The assistant's text after the last user message of a chatbot value (messages format)."""
    if not isinstance(chat, list):
        return ""
    last_user = max(
        (i for i, m in enumerate(chat) if isinstance(m, dict) and m.get("role") == "user"), default=-1
    )
    parts = []
    for m in chat[last_user + 1 :]:
        if not isinstance(m, dict) or m.get("role") != "assistant" or (m.get("metadata") or {}).get("title"):
            continue  # trace rows (tool calls, thoughts) carry a title: not the answer
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        elif isinstance(content, dict):
            parts.append(str(content.get("text", "")))
    return "".join(parts)


class BrowserProtocol:
    """Gradio's queue protocol spoken the way the browser's JavaScript client does: join, then read the
    server-sent events as they arrive. gradio_client polls its message queue every 50 ms, which delays
    the first token and batches updates; this path shows what the app itself adds."""

    def __init__(self, url: str, timeout: float = 300):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self.config = self.http.get(self.url + "/config").json()
        self.base = self.url + (self.config.get("api_prefix") or "/gradio_api")
        self.chat = find_chat_event(self.config)

    def close(self) -> None:
        self.http.close()

    def _messages(self, event: Event, data: list, session: str) -> Iterator[dict]:
        self.http.post(
            self.base + "/queue/join",
            json={
                "data": data,
                "fn_index": event.fn_index,
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        ).raise_for_status()
        with self.http.stream("GET", self.base + "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    yield msg
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success", True):
                            raise RuntimeError(f"/{event.api_name} failed: {msg.get('output')}")
                        return

    def stream_reply(self, message: str, system: str, max_tokens: int) -> Iterator[str]:
        """Send one message in a fresh session; yield the reply's new text as each update arrives."""
        from gradio_client.utils import apply_diff

        session = uuid.uuid4().hex[:12]
        for event in self.chat.chain[:-1]:
            for _ in self._messages(event, self.chat.values(event, message, system, max_tokens), session):
                pass
        reply = self.chat.reply
        slot = [c.id for c in reply.outputs].index(self.chat.chatbot_id)
        outputs: list | None = None
        seen = ""
        values = self.chat.values(reply, message, system, max_tokens)
        for msg in self._messages(reply, values, session):
            data = msg.get("output", {}).get("data")
            if msg.get("msg") == "process_generating" and data is not None:
                # The first update carries whole values, the later ones diffs against the previous.
                outputs = (
                    list(data)
                    if outputs is None
                    else [apply_diff(o, d) for o, d in zip(outputs, data, strict=False)]
                )
            elif msg.get("msg") == "process_completed" and data is not None:
                outputs = list(data)  # the final values, whole
            else:
                continue
            text = reply_text(outputs[slot])
            if len(text) > len(seen) and text.startswith(seen):
                yield text[len(seen) :]
                seen = text


def gradio_client_reply(client, chat: ChatEvent, message: str, system: str, max_tokens: int) -> Iterator[str]:
    """The same message through ``gradio_client`` (which drops the states from inputs and outputs)."""
    for event in chat.chain[:-1]:
        client.predict(*chat.api_values(event, message, system, max_tokens), api_name=f"/{event.api_name}")
    reply = chat.reply
    args = chat.api_values(reply, message, system, max_tokens)
    slot = [c.id for c in reply.outputs if not c.skip_api].index(chat.chatbot_id)
    seen = ""
    for update in client.submit(*args, api_name=f"/{reply.api_name}"):
        outputs = update if isinstance(update, tuple | list) else (update,)
        text = reply_text(outputs[slot]) if len(outputs) > slot else ""
        if len(text) > len(seen) and text.startswith(seen):
            yield text[len(seen) :]
            seen = text


def wait_http(url: str, proc, timeout: float, log_path) -> float:
    """Wait until ``url`` answers; return the seconds it took (raises with the log if the process died)."""
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(
                f"{url}: the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - t0
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{url}: not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
