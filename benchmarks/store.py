"""Write throughput of the feedback store under concurrent writers.

    python -m benchmarks.store [--writers 8] [--rows 20000] [--db PATH] [--quick]

``--writers`` threads share one ``FeedbackStore`` (each thread gets its own SQLite connection, as
the web server's workers do) and write ``--rows`` feedback rows in total through the store API
(``record_feedback``: a BEGIN IMMEDIATE upsert with validation, one transaction per row, as the UI
sends them). Then the rows are counted from a fresh connection. Prints rows/s, latency percentiles
and lost rows; the last line is a JSON object with ``rows_per_s``, ``p99_ms`` and ``lost``.
Target: rows_per_s >= 5000, p99_ms <= 10, lost == 0. ``--quick`` writes 2,000 rows.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import quick
from feedback_store.store import AssistantTurn, FeedbackStore

REPLIES = 500
QUICK = {"rows": 2_000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--db", type=Path, help="database file (default: a fresh temporary file)")
    args, applied = quick.parse(ap, QUICK)
    path = args.db or Path(tempfile.mkdtemp(prefix="pg-bench-store-")) / "bench.db"

    store = FeedbackStore(path)
    version = store.versions.ensure_base("bench.gguf").id
    conv = store.create_conversation("bench", system_prompt="Be brief.")
    prompt = store.add_message(conv, "user", "Rate me.")
    replies = [
        store.add_assistant_message(
            conv, prompt, AssistantTurn(content=f"reply {i}", model_version_id=version)
        )
        for i in range(REPLIES)
    ]
    per_writer = [args.rows // args.writers + (k < args.rows % args.writers) for k in range(args.writers)]
    latencies: list[list[float]] = [[] for _ in range(args.writers)]
    acked = [0] * args.writers
    errors: list[BaseException] = []
    start = threading.Barrier(args.writers + 1)

    def writer(k: int) -> None:
        start.wait()
        lat = latencies[k]
        try:
            for i in range(per_writer[k]):
                # a distinct (reply, user) key per row: 20,000 rows, not 20,000 updates of a few
                user = f"user-{k}-{i // REPLIES}"
                message_id = replies[i % REPLIES]
                t0 = time.perf_counter()
                store.feedback.record_feedback(
                    message_id,
                    user,
                    thumbs=1 if i % 3 else -1,
                    add_reasons=[] if i % 3 else ["too_long"],
                    score=1 + i % 7,
                )
                lat.append(time.perf_counter() - t0)
                acked[k] += 1
        except BaseException as exc:  # reported below: a failed write is a lost row
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    store.close()

    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    conn.close()
    all_lat = np.array([x for lat in latencies for x in lat]) * 1000
    total_acked = sum(acked)
    lost = args.rows - stored
    rows_per_s = total_acked / elapsed
    p50, p99, worst = (float(np.percentile(all_lat, q)) for q in (50, 99, 100)) if len(all_lat) else (0, 0, 0)
    print(f"{args.writers} writers, {args.rows:,} feedback rows through record_feedback() into {path}")
    print(f"acknowledged {total_acked:,} in {elapsed:.2f} s: {rows_per_s:,.0f} rows/s")
    print(f"latency per write: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms")
    print(
        f"stored {stored:,}; lost {lost}; errors {len(errors)}"
        + (f" (first: {errors[0]!r})" if errors else "")
    )
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                "rows_per_s": round(rows_per_s, 1),
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "lost": lost,
                "errors": len(errors),
                "writers": args.writers,
                "rows": args.rows,
            }
        )
    )


if __name__ == "__main__":
    main()
