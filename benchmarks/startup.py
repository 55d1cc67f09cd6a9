"""Time from `python launch.py` to a usable page, and the embedded model's speed as the app stores it.

    python -m benchmarks.startup [--turns 5] [--quick]

Starts the real server in a subprocess (installed dependencies assumed), opens the page in Chromium,
waits until the chat input is on screen, then chats ``--turns`` times and reads the stored timings
(time to first token, tokens/s) back from the SQLite file. ``--quick`` chats once. Last line: a JSON
object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks import ROOT, quick

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is the largest ocean on Earth?",
    "Write one sentence about the moon.",
    "How many legs does a spider have?",
    "Give me a synonym for happy.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--port", type=int, default=7899)
    args, applied = quick.parse(ap, {"turns": 1})

    from playwright.sync_api import sync_playwright

    data_dir = Path(tempfile.mkdtemp(prefix="pg-startup-"))
    url = f"http://127.0.0.1:{args.port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "--port",
            str(args.port),
            "--no-open-browser",
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
            if proc.poll() is not None:
                raise SystemExit("server exited early")
        t_http = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#chat-input textarea", state="visible")
            t_page = time.perf_counter() - t0
            previous = ""
            for i in range(args.turns):
                box = page.locator("#chat-input textarea")
                box.fill(QUESTIONS[i % len(QUESTIONS)])
                box.press("Enter")
                page.wait_for_function(
                    "prev => { const t = document.querySelector('#reply-stats')?.innerText || '';"
                    " return t.includes('tokens') && t !== prev; }",
                    arg=previous,
                    timeout=120_000,
                )
                previous = page.locator("#reply-stats").inner_text()
                page.locator("#new-conversation").click()
                page.wait_for_function(
                    "() => !document.querySelector('#reply-stats').innerText.includes('tokens')"
                )
                previous = ""
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    db = sqlite3.connect(data_dir / "playground.db")
    rows = db.execute(
        "SELECT ttft_ms, tokens_per_s, completion_tokens FROM messages WHERE role = 'assistant'"
    ).fetchall()
    ttfts = [r[0] for r in rows if r[0] is not None]
    speeds = [r[1] for r in rows if r[1] is not None]
    print(f"{'time to HTTP 200':<28}{t_http:8.2f} s")
    print(f"{'time to usable chat page':<28}{t_page:8.2f} s")
    print(f"{'replies stored':<28}{len(rows):8d}")
    print(f"{'median time to first token':<28}{statistics.median(ttfts):8.0f} ms")
    print(f"{'median tokens/s':<28}{statistics.median(speeds):8.1f}")
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                "startup_http_s": round(t_http, 2),
                "startup_page_s": round(t_page, 2),
                "replies": len(rows),
                "ttft_ms_median": round(statistics.median(ttfts), 1),
                "tokens_per_s_median": round(statistics.median(speeds), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
