"""Fitting a conversation into a model's context window, saying what was left out.

Policy, in order: keep the system prompt and the last user message; drop the oldest other messages;
then shorten the last user message (keeping its beginning); then shorten the reply budget. Each step
adds a notice the UI shows next to the reply, so nothing is cut silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from models.base import ChatMessage

MIN_REPLY_TOKENS = 16
TRUNCATION_MARK = "\n[... truncated to fit the model's context ...]"


@dataclass
class FittedPrompt:
    prompt: str
    prompt_tokens: int
    messages: list[ChatMessage]
    max_new_tokens: int
    notices: list[str] = field(default_factory=list)


def fit_to_context(
    messages: Sequence[ChatMessage],
    *,
    render: Callable[[Sequence[ChatMessage]], str],
    count_tokens: Callable[[str], int],
    context_length: int,
    max_new_tokens: int,
) -> FittedPrompt:
    if not messages:
        raise ValueError("no messages to send")
    msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    notices: list[str] = []
    reply_budget = min(max_new_tokens, max(MIN_REPLY_TOKENS, context_length // 4))

    def measure(ms: list[ChatMessage]) -> tuple[str, int]:
        text = render(ms)
        return text, count_tokens(text)

    prompt, n = measure(msgs)
    if n + max_new_tokens <= context_length:
        return FittedPrompt(prompt, n, msgs, max_new_tokens)

    # 1. Drop the oldest messages between the system prompt and the last message.
    head = [m for m in msgs[:1] if m["role"] == "system"]
    body = msgs[len(head) :]
    dropped = 0
    while len(body) > 1 and n + reply_budget > context_length:
        body = body[1:]
        # Never start the kept history with an assistant turn: templates expect user first.
        while len(body) > 1 and body[0]["role"] == "assistant":
            body = body[1:]
            dropped += 1
        dropped += 1
        msgs = head + body
        prompt, n = measure(msgs)
    if dropped:
        notices.append(
            f"{dropped} earlier message(s) were left out to fit the model's context of {context_length} tokens."
        )

    # 2. Shorten the last message, keeping its beginning.
    if n + reply_budget > context_length:
        last = msgs[-1]
        original = last["content"]
        lo, hi = 0, len(original)
        best = None
        while lo <= hi:  # longest prefix that fits
            mid = (lo + hi) // 2
            candidate = msgs[:-1] + [ChatMessage(role=last["role"], content=original[:mid] + TRUNCATION_MARK)]
            p, k = measure(candidate)
            if k + reply_budget <= context_length:
                best = (candidate, p, k, mid)
                lo = mid + 1
            else:
                hi = mid - 1
        if best is None:
            raise ValueError(
                f"the system prompt alone does not fit the model's context of {context_length} tokens; shorten it"
            )
        msgs, prompt, n, kept = best
        notices.append(
            f"Your message was truncated from {len(original):,} to {kept:,} characters to fit the model's context."
        )

    # 3. Whatever room is left is the reply budget.
    room = context_length - n
    new_tokens = min(max_new_tokens, room)
    if new_tokens < max_new_tokens:
        notices.append(f"The reply was limited to {new_tokens} tokens by the model's context.")
    return FittedPrompt(prompt, n, msgs, new_tokens, notices)
