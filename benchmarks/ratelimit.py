"""Rate limits under a bounded load from 127.0.0.1, against a real server (``launch.py``, the embedded
model, the OpenAI API; the UI's handlers share the same limiter).

    python -m benchmarks.ratelimit                      # 8 threads, 48 requests, 10/min per user, 15/min per address
    python -m benchmarks.ratelimit --threads 16 --requests 96
    python -m benchmarks.ratelimit --quick              # 24 requests in phase 1: a smoke run

Phase 1: two users (alice, bob) send requests from 127.0.0.1 at once. Expected: the address gets
exactly its per-address quota, neither user more than the per-user quota; refusals are 429 with a
Retry-After, and cost no model time (their latency is reported beside the served requests').
Phase 2: three more users arrive "through the share tunnel": the same 127.0.0.1 peer, each with its
own X-Forwarded-For address. uvicorn trusts that header from 127.0.0.1 only, so each gets its own
per-address bucket (and its per-user quota) even though 127.0.0.1's is spent.
A page load during phase 1 shows the UI stays responsive. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks import quick
from tests.conftest import ServerProcess

USERS = {
    "alice": "pw-alice-123",
    "bob": "pw-bob-4567",
    "carol": "pw-carol-89",
    "dave": "pw-dave-012",
    "erin": "pw-erin-345",
}
BODY = {
    "model": "playground",
    "messages": [{"role": "user", "content": "Say hi."}],
    "max_tokens": 1,
    "temperature": 0,
}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fire(url: str, jobs: list[tuple[str, str | None]], threads: int) -> list[dict]:
    """Send one request per job (user, forwarded address) with ``threads`` workers; collect outcomes."""
    out: list[dict] = []
    lock = threading.Lock()
    queue = list(jobs)

    def worker():
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    user, forwarded = queue.pop(0)
                headers = {"Authorization": f"Bearer {user}:{USERS[user]}"}
                if forwarded:
                    headers["X-Forwarded-For"] = forwarded
                t0 = time.perf_counter()
                r = client.post(url + "v1/chat/completions", json=BODY, headers=headers)
                row = {
                    "user": user,
                    "address": forwarded or "127.0.0.1",
                    "status": r.status_code,
                    "ms": (time.perf_counter() - t0) * 1000,
                    "retry_after": r.headers.get("retry-after"),
                    "message": r.json().get("error", {}).get("message", "") if r.status_code != 200 else "",
                }
                with lock:
                    out.append(row)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def summarize(rows: list[dict], title: str) -> dict:
    print(f"\n{title}: {len(rows)} requests")
    by = Counter((r["user"], r["address"], r["status"]) for r in rows)
    for (user, address, status), n in sorted(by.items()):
        print(f"  {user:<6} from {address:<15} HTTP {status}: {n}")
    ok = [r["ms"] for r in rows if r["status"] == 200]
    limited = [r["ms"] for r in rows if r["status"] == 429]
    reasons = Counter(
        "per user" if "each user" in r["message"] else "per address" for r in rows if r["status"] == 429
    )
    print(
        f"  429 reasons: {dict(reasons)}; every 429 has Retry-After: {all(r['retry_after'] for r in rows if r['status'] == 429)}"
    )
    if ok:
        print(f"  served: median {statistics.median(ok):.0f} ms, p90 {_pct(ok, 0.9):.0f} ms")
    if limited:
        print(f"  refused: median {statistics.median(limited):.1f} ms, p90 {_pct(limited, 0.9):.1f} ms")
    return {
        "requests": len(rows),
        "served": len(ok),
        "refused_429": len(limited),
        "refused_by": dict(reasons),
        "served_ms_median": statistics.median(ok) if ok else None,
        "refused_ms_median": statistics.median(limited) if limited else None,
        "per_user_served": dict(Counter(r["user"] for r in rows if r["status"] == 200)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--requests", type=int, default=48, help="phase 1 requests (half alice, half bob)")
    p.add_argument("--per-user", default="10/minute")
    p.add_argument("--per-address", default="15/minute")
    # 24 still exceeds both quotas (12 per user > 10, 24 from the address > 15): refusals are exercised.
    args, applied = quick.parse(p, {"requests": 24}, argv)
    with tempfile.TemporaryDirectory() as tmp:
        flags = [
            "--rate-limit-local",
            "--rate-limit-chat",
            args.per_user,
            "--rate-limit-chat-ip",
            args.per_address,
        ]
        for user, password in USERS.items():
            flags += ["--auth", f"{user}:{password}"]
        server = ServerProcess(Path(tmp), *flags, "--api-key", "bench-key-123456").wait_ready()
        try:
            page_ms: list[float] = []
            stop = threading.Event()

            def load_pages():
                while not stop.is_set():
                    t0 = time.perf_counter()
                    httpx.get(server.url + "gradio_api/login_check", timeout=30)
                    page_ms.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.2)

            pages = threading.Thread(target=load_pages)
            pages.start()
            t0 = time.perf_counter()
            phase1 = fire(
                server.url, [("alice" if i % 2 else "bob", None) for i in range(args.requests)], args.threads
            )
            phase1_s = time.perf_counter() - t0
            stop.set()
            pages.join()
            s1 = summarize(
                phase1, f"Phase 1: alice and bob from 127.0.0.1, {args.threads} at once ({phase1_s:.1f} s)"
            )
            print(
                f"  UI answered during the load: median {statistics.median(page_ms):.1f} ms over {len(page_ms)} checks"
            )
            jobs = [
                (u, f"198.51.100.{i + 1}") for i, u in enumerate(("carol", "dave", "erin")) for _ in range(12)
            ]
            phase2 = fire(server.url, jobs, args.threads)
            s2 = summarize(
                phase2, "Phase 2: carol, dave, erin through the tunnel (127.0.0.1 + X-Forwarded-For)"
            )
        finally:
            server.stop()
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                "per_user": args.per_user,
                "per_address": args.per_address,
                "phase1": s1,
                "phase2": s2,
                "ui_ms_median": statistics.median(page_ms),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
