"""How fast the history sidebar opens with many conversations in the store.

    python -m benchmarks.history [--conversations 1000] [--others 4000] [--turns 3] [--repeats 30]
    python -m benchmarks.history --quick     # well under a minute: fewer other users' rows and repeats

A fresh database gets ``--conversations`` Chat conversations of one user (``--turns`` exchanges each)
and ``--others`` conversations of 20 other users, through the store API. Then, ``--repeats`` times
each, it times: the store query the sidebar shows (``store.conversations.list_for_user``, the newest
50), the handler the page calls on load (``HistorySidebar.on_load``: the list, the count and the
Gradio update), a search that matches a few conversations and one that matches none (every message
of the user is read), and restoring one conversation (``HistorySidebar.open``). Prints the median and
the 95th percentile of each and the rows returned; the last line is a JSON object with the same keys
in a quick and a full run. Target: the sidebar opens in under 50 ms at the median with 1,000
conversations.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from benchmarks import quick
from feedback_store.store import AssistantTurn, FeedbackStore
from playground.history import HistorySidebar
from playground.presets.library import PresetLibrary
from playground.safety import Safety
from playground.session import ChatSession
from settings import Settings

USER = "bench-user"
NEEDLE = "zanzibar"  # in one conversation out of 100
QUICK = {"others": 200, "turns": 2, "repeats": 10}


def seed(store: FeedbackStore, conversations: int, others: int, turns: int) -> tuple[list[str], int]:
    """The conversations (one user's, then the others'), in batches of one transaction each."""
    version = store.versions.ensure_base("bench.gguf", name="bench base").id
    mine: list[str] = []
    messages = 0
    owners = [USER] * conversations + [f"other-{i % 20}" for i in range(others)]
    for start in range(0, len(owners), 200):
        with store.write():  # one transaction per batch: seeding is not what is measured
            for n, owner in enumerate(owners[start : start + 200], start):
                conv = store.create_conversation(owner, source="ui", system_prompt="Be brief.")
                parent = None
                for t in range(turns):
                    topic = NEEDLE if n % 100 == 7 and t == turns - 1 else f"topic {n}"
                    parent = store.add_message(conv, "user", f"Question {t} about {topic}?", parent_id=parent)
                    parent = store.add_assistant_message(
                        conv,
                        parent,
                        AssistantTurn(content=f"Answer {t} about {topic}.", model_version_id=version),
                    )
                    messages += 2
                if owner == USER:
                    mine.append(conv)
    return mine, messages


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median and 95th percentile in ms of ``repeats`` calls after one warm-up, and the last result."""
    result = fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return float(np.median(samples)), float(np.percentile(samples, 95)), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=1000, help="conversations of the measured user")
    ap.add_argument("--others", type=int, default=4000, help="conversations of 20 other users")
    ap.add_argument("--turns", type=int, default=3, help="exchanges per conversation")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--db", type=Path, help="database file (default: a fresh temporary file)")
    args, applied = quick.parse(ap, QUICK)
    path = args.db or Path(tempfile.mkdtemp(prefix="pg-bench-history-")) / "bench.db"

    store = FeedbackStore(path)
    t0 = time.perf_counter()
    mine, messages = seed(store, args.conversations, args.others, args.turns)
    seed_s = time.perf_counter() - t0
    settings = Settings(data_dir=path.parent, rate_limit_feedback="off")
    sidebar = HistorySidebar(store, Safety(store), PresetLibrary.from_settings(settings))
    request = gr.Request(username=USER, session_hash="b" * 16, client={"host": "127.0.0.1", "port": 1})

    list_med, list_p95, rows = timed(lambda: store.conversations.list_for_user(USER), args.repeats)
    load_med, load_p95, (_, listing, line) = timed(lambda: sidebar.on_load(None, request), args.repeats)
    hit_med, hit_p95, hits = timed(
        lambda: store.conversations.list_for_user(USER, search=NEEDLE), args.repeats
    )
    miss_med, miss_p95, misses = timed(
        lambda: store.conversations.list_for_user(USER, search="no such words"), args.repeats
    )
    middle = mine[len(mine) // 2]
    open_med, open_p95, opened = timed(
        lambda: sidebar.open(middle, ChatSession(), None, request), args.repeats
    )
    store.close()

    print(
        f"{args.conversations:,} conversations of one user and {args.others:,} of others "
        f"({messages:,} messages) seeded in {seed_s:.1f} s into {path}"
    )
    print(f"list (store query, newest 50): median {list_med:.2f} ms, p95 {list_p95:.2f} ms, {len(rows)} rows")
    print(
        f"open the sidebar (on_load handler): median {load_med:.2f} ms, p95 {load_p95:.2f} ms, "
        f"{len(listing['choices'])} rows; {line}"
    )
    print(f"search, {len(hits)} matches: median {hit_med:.2f} ms, p95 {hit_p95:.2f} ms")
    print(f"search, no match: median {miss_med:.2f} ms, p95 {miss_p95:.2f} ms")
    print(f"restore one ({len(opened[0])} messages shown): median {open_med:.2f} ms, p95 {open_p95:.2f} ms")
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                "conversations": args.conversations,
                "other_conversations": args.others,
                "messages": messages,
                "list_rows": len(rows),
                "list_median_ms": round(list_med, 3),
                "list_p95_ms": round(list_p95, 3),
                "sidebar_median_ms": round(load_med, 3),
                "sidebar_p95_ms": round(load_p95, 3),
                "search_rows": len(hits),
                "search_median_ms": round(hit_med, 3),
                "search_p95_ms": round(hit_p95, 3),
                "search_miss_median_ms": round(miss_med, 3),
                "open_median_ms": round(open_med, 3),
                "open_p95_ms": round(open_p95, 3),
                "quick": bool(args.quick),
            }
        )
    )


if __name__ == "__main__":
    main()
