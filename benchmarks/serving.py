"""Serving overhead: the same prompts and parameters through raw llama-cpp-python, our ChatModel, the
Gradio app and our OpenAI API; then concurrent streams and a hot swap.

    python -m benchmarks.serving [--rounds 3] [--max-tokens 64] [--streams 8]

Everything runs in one go on the embedded model, greedy, with the same thread count per llama.cpp
instance everywhere (the server's default: cores / concurrency), paths interleaved prompt by prompt so
machine noise hits them alike. Tokens/s is measured by the client from its first to its last received
chunk, tokens counted the same way for every path. The app is measured twice: with gradio_client (which
polls for messages every 50 ms) and speaking Gradio's SSE queue protocol as the browser does; the
``app_*`` keys are the latter, ``*_gradio_client_*`` the former. ``ratio_*`` compare end-to-end rates
(tokens / (request -> last chunk)). Prints a table; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a knowledgeable assistant. Give short, correct answers."
QUESTIONS = [
    "Tell me about the Moon.",
    "Describe how bread is made.",
    "Write a short story about a cat.",
    "Explain why the sky is blue.",
    "What should I pack for a weekend hike?",
    "Describe the city of Paris.",
]


@dataclass
class Run:
    ttft_s: float
    tok_s: float | None  # decode rate the client sees: (tokens - 1) / (last chunk - first chunk)
    tokens: int
    text: str
    total_s: float  # request -> last chunk

    @property
    def e2e_tok_s(self) -> float | None:
        """tokens / (request -> last chunk): unaffected by how a transport batches its chunks."""
        return self.tokens / self.total_s if self.tokens and self.total_s > 0 else None


def measure(chunks, t_request: float, count) -> Run:
    """Consume a stream of text chunks; time the first and the last one."""
    t_first = t_last = None
    text = ""
    for piece in chunks:
        if not piece:
            continue
        now = time.perf_counter()
        t_first = t_first or now
        t_last = now
        text += piece
    n = count(text)
    span = (t_last - t_first) if t_first else 0
    end = t_last or time.perf_counter()
    return Run(
        (t_first or end) - t_request, (n - 1) / span if n > 1 and span > 0 else None, n, text, end - t_request
    )


class BrowserProtocol:
    """Gradio's queue protocol spoken the way the browser's JavaScript client does (join, then read the
    server-sent events as they arrive). gradio_client polls its message queue every 50 ms
    (gradio_client/utils.py, stream_sse_v1plus), which delays the first token and batches updates;
    this path shows what the app itself adds."""

    def __init__(self, url: str, db_path: Path):
        import httpx

        self.base = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=300)
        self.db_path = db_path
        config = self.http.get(url.rstrip("/") + "/config").json()
        types = {c["id"]: c["type"] for c in config["components"]}
        self.deps = {
            d["api_name"]: (d["id"], [types[i] == "state" for i in d["inputs"]])
            for d in config["dependencies"]
            if d.get("api_name") in ("submit", "respond")
        }

    def events(self, api_name: str, values: list, session: str):
        """Yield (message type, arrival time) for one event until it completes."""
        fn, is_state = self.deps[api_name]
        it = iter(values)
        data = [None if state else next(it) for state in is_state]
        self.http.post(
            self.base + "/queue/join",
            json={
                "data": data,
                "fn_index": fn,
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        ).raise_for_status()
        with self.http.stream("GET", self.base + "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    yield msg["msg"], time.perf_counter()
                    if msg["msg"] == "process_completed":
                        return

    def last_reply(self, session: str) -> str:
        import sqlite3

        with sqlite3.connect(self.db_path) as db:
            row = db.execute(
                "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                "WHERE c.user_id = ? AND m.role = 'assistant' ORDER BY m.id DESC LIMIT 1",
                [f"anon-{session[:12]}"],
            ).fetchone()
        return row[0] if row else ""

    def run(self, q: str, system: str, max_tokens: int, count) -> Run:
        import uuid

        session = uuid.uuid4().hex[:12]
        for _ in self.events("submit", [q, system], session):
            pass
        t = time.perf_counter()
        values = [system, 0.0, 0.95, 40, max_tokens, 1.1, -1, ""]
        times = [at for kind, at in self.events("respond", values, session) if kind == "process_generating"]
        text = self.last_reply(session)
        n = count(text)
        end = times[-1] if times else time.perf_counter()
        span = end - times[0] if times else 0
        first = times[0] if times else end
        return Run(first - t, (n - 1) / span if n > 1 and span > 0 else None, n, text, end - t)


def start_server(data_dir: Path, port: int, concurrency: int, threads: int) -> subprocess.Popen:
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--no-open-browser", "--data-dir",
         str(data_dir), "--concurrency", str(concurrency), "--threads", str(threads), "--version-poll-s", "0.2"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(data_dir / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2, help="server model instances (default 2)")
    ap.add_argument("--port", type=int, default=7897)
    args = ap.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import openai
    from gradio_client import Client
    from llama_cpp import Llama

    from feedback_store.store import FeedbackStore
    from models.base import SamplingParams
    from models.embedded import embedded_model_path
    from models.llamacpp import LlamaCppChatModel
    from models.lora_agreement import make_random_gguf_lora

    threads = max(1, (os.cpu_count() or 1) // args.concurrency)  # what the server gives each instance
    data_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    server = start_server(data_dir, args.port, args.concurrency, threads)
    try:
        url = f"http://127.0.0.1:{args.port}/"
        path = embedded_model_path()
        ours = LlamaCppChatModel(path, pool_size=1, n_threads=threads)
        raw = Llama(
            model_path=str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        count = ours.count_tokens  # one tokenizer for every path: the model's own, no BOS here
        api = openai.OpenAI(base_url=url + "v1", api_key="bench", max_retries=0, timeout=300)
        params = SamplingParams(
            temperature=0, max_new_tokens=args.max_tokens, repetition_penalty=1.1, top_k=40, top_p=0.95
        )

        def msgs(q):
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]

        def run_raw(q):
            tokens = raw.tokenize(ours.render_prompt(msgs(q)).encode(), add_bos=False, special=True)
            t = time.perf_counter()
            stream = raw.create_completion(
                prompt=tokens, max_tokens=args.max_tokens, temperature=0, top_p=0.95, top_k=40, min_p=0.0,
                repeat_penalty=1.1, stream=True,
            )  # fmt: skip
            return measure((c["choices"][0]["text"] for c in stream), t, count)

        def run_ours(q):
            t = time.perf_counter()
            return measure(ours.stream(msgs(q), params), t, count)

        def run_api(q, client=api):
            t = time.perf_counter()
            stream = client.chat.completions.create(
                model="playground", messages=msgs(q), temperature=0, max_tokens=args.max_tokens, stream=True,
                extra_body={"top_k": 40, "repetition_penalty": 1.1}, top_p=0.95,
            )  # fmt: skip
            return measure((c.choices[0].delta.content or "" for c in stream if c.choices), t, count)

        def gradio_pieces(client, q):
            client.predict(q, SYSTEM, api_name="/submit")
            job = client.submit(SYSTEM, 0.0, 0.95, 40, args.max_tokens, 1.1, -1, "", api_name="/respond")
            seen = ""
            for update in job:  # every update carries the whole chat; yield what is new
                content = update[0][-1]["content"] if update and update[0] else ""
                text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
                if update[0][-1].get("role") == "assistant" and len(text) > len(seen):
                    yield text[len(seen) :]
                    seen = text

        def run_app(q, client=None):
            client = client or Client(url, verbose=False)
            t = time.perf_counter()
            return measure(gradio_pieces(client, q), t, count)

        browser = BrowserProtocol(url, data_dir / "playground.db")

        def run_app_sse(q):
            return browser.run(q, SYSTEM, args.max_tokens, count)

        paths = {
            "raw llama-cpp-python": run_raw,
            "ChatModel": run_ours,
            "Gradio app (SSE)": run_app_sse,
            "Gradio app (client)": run_app,
            "OpenAI API": run_api,
        }
        for fn in paths.values():  # warm-up: first-call costs (imports, caches) are not serving overhead
            fn("Say hello.")
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        # Every path gets every question once per round, in a shifted order: llama.cpp reuses a context's
        # cached prompt prefix, so a server instance must never get the question it answered last (a free
        # cache hit the raw baseline never gets). With the server's instances taking turns, a shift of two
        # questions per path keeps each instance's previous question different from its next.
        replies: dict[tuple[str, str], str] = {}
        for _ in range(args.rounds):
            for k in range(len(QUESTIONS)):
                for i, (name, fn) in enumerate(paths.items()):
                    q = QUESTIONS[(k + 2 * i) % len(QUESTIONS)]
                    run = fn(q)
                    runs[name].append(run)
                    replies[(name, q)] = run.text
        raw.close()

        # -- concurrent streams through the API and through the app -----------------------------------
        def concurrent(fn, n):
            results, errors = [None] * n, []

            def one(i):
                try:
                    results[i] = fn(QUESTIONS[i % len(QUESTIONS)])
                except Exception as exc:  # counted below
                    errors.append(repr(exc))

            t0 = time.perf_counter()
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(timeout=900)
            wall = time.perf_counter() - t0
            done = [r for r in results if r is not None and r.tokens > 0]
            return len(done), sum(r.tokens for r in done) / wall, errors

        api_done, api_agg, api_err = concurrent(run_api, args.streams)
        app_clients = [Client(url, verbose=False) for _ in range(args.streams)]
        slot = iter(range(args.streams))
        lock = threading.Lock()

        def run_app_own(q):
            with lock:
                i = next(slot)
            return run_app(q, app_clients[i])

        app_done, app_agg, app_err = concurrent(run_app_own, args.streams)
        sse_done, sse_agg, sse_err = concurrent(
            lambda q: BrowserProtocol(url, data_dir / "playground.db").run(q, SYSTEM, args.max_tokens, count),
            args.streams,
        )

        # -- hot swap under load ---------------------------------------------------------------------------
        store = FeedbackStore(data_dir / "playground.db")
        base = store.versions.deployed(path.name)
        lora = make_random_gguf_lora(path, data_dir / "swap-lora")
        cand = store.versions.register_candidate(
            path.name, gguf_adapter_path=lora, parent_id=base.id, method="bench"
        )
        running: dict = {}

        def long_stream():
            running["run"] = run_api("Write a long story about a dragon and a knight.")

        t_stream = threading.Thread(target=long_stream)
        t_stream.start()
        time.sleep(1.0)
        t0 = time.perf_counter()
        store.versions.deploy(cand.id)
        visible = None
        while time.perf_counter() - t0 < 60:
            r = api.chat.completions.create(
                model="playground", messages=msgs("Hi"), max_tokens=1, temperature=0
            )
            if r.system_fingerprint == f"version-{cand.id}":
                visible = time.perf_counter() - t0
                break
        t_stream.join(timeout=300)
        store.versions.rollback(base.id)
        store.close()
        log = (data_dir / "server.log").read_text()
        m = re.search(rf"now serving version {cand.id} .*loaded in ([\d.]+) s, switched in ([\d.]+) ms", log)
        ours.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    rows = {name: (med(r.tok_s for r in rs), med(r.ttft_s for r in rs) * 1000) for name, rs in runs.items()}
    e2e = {name: med(r.e2e_tok_s for r in rs) for name, rs in runs.items()}
    raw_tok, raw_ttft = rows["raw llama-cpp-python"]
    raw_e2e = e2e["raw llama-cpp-python"]
    print(f"\n{len(QUESTIONS)} prompts x {args.rounds} rounds, greedy, {args.max_tokens} new tokens max, "
          f"{threads} thread(s) per llama.cpp instance, server concurrency {args.concurrency}")  # fmt: skip
    print("medians; decode = first->last chunk, e2e = tokens / (request->last chunk)")
    print(
        f"{'path':<22} {'decode tok/s':>12} {'vs raw':>7} {'e2e tok/s':>10} {'vs raw':>7} {'TTFT ms':>8} {'+ms':>7}"
    )
    for name, (tok, ttft) in rows.items():
        print(
            f"{name:<22} {tok:>12.1f} {tok / raw_tok:>7.3f} {e2e[name]:>10.1f} {e2e[name] / raw_e2e:>7.3f} "
            f"{ttft:>8.1f} {ttft - raw_ttft:>7.1f}"
        )
    same = sum(replies[("raw llama-cpp-python", q)] == replies[("Gradio app (SSE)", q)] for q in QUESTIONS)
    print(f"identical greedy replies raw vs app (last round): {same}/{len(QUESTIONS)}")
    print(f"{args.streams} concurrent streams (tokens / wall time): app (SSE) {sse_done}/{args.streams} done, "
          f"{sse_agg:.1f} tok/s; app (gradio_client) {app_done}/{args.streams}, {app_agg:.1f} tok/s; "
          f"API {api_done}/{args.streams}, {api_agg:.1f} tok/s")  # fmt: skip
    for e in api_err + app_err + sse_err:
        print("error:", e)
    swap_load = float(m.group(1)) if m else None
    swap_ms = float(m.group(2)) if m else None
    print(f"hot swap: new version visible to new requests after {visible if visible else float('nan'):.2f} s "
          f"(poll 0.2 s + load {swap_load} s + switch {swap_ms} ms); stream running across it completed: "
          f"{bool(running.get('run') and running['run'].tokens > 0)}")  # fmt: skip
    app_tok, app_ttft = rows["Gradio app (SSE)"]
    client_tok, client_ttft = rows["Gradio app (client)"]
    api_tok, api_ttft = rows["OpenAI API"]
    print(
        json.dumps(
            {
                "raw_tok_s": round(raw_tok, 2),
                "chatmodel_tok_s": round(rows["ChatModel"][0], 2),
                "app_tok_s": round(app_tok, 2),
                "api_tok_s": round(api_tok, 2),
                # e2e: a transport that delivers chunks in bursts cannot look faster than it is
                "ratio_app_vs_raw": round(e2e["Gradio app (SSE)"] / raw_e2e, 3),
                "ratio_api_vs_raw": round(e2e["OpenAI API"] / raw_e2e, 3),
                "ratio_app_vs_raw_decode": round(app_tok / raw_tok, 3),
                "raw_e2e_tok_s": round(raw_e2e, 2),
                "app_e2e_tok_s": round(e2e["Gradio app (SSE)"], 2),
                "app_gradio_client_tok_s": round(client_tok, 2),
                "ratio_app_gradio_client_vs_raw": round(e2e["Gradio app (client)"] / raw_e2e, 3),
                "ttft_overhead_gradio_client_ms": round(client_ttft - raw_ttft, 1),
                "raw_ttft_ms": round(raw_ttft, 1),
                "ttft_overhead_ms": round(app_ttft - raw_ttft, 1),
                "api_ttft_overhead_ms": round(api_ttft - raw_ttft, 1),
                "concurrent_streams": args.streams,
                "concurrent_completed": sse_done,
                "aggregate_tok_s": round(sse_agg, 2),
                "gradio_client_concurrent_completed": app_done,
                "gradio_client_aggregate_tok_s": round(app_agg, 2),
                "api_concurrent_completed": api_done,
                "api_aggregate_tok_s": round(api_agg, 2),
                "hotswap_visible_s": None if visible is None else round(visible, 3),
                "hotswap_load_s": swap_load,
                "hotswap_switch_ms": swap_ms,
                "threads_per_instance": threads,
            }
        )
    )


if __name__ == "__main__":
    main()
