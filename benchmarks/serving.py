"""Serving overhead: the same prompts and parameters through raw llama-cpp-python, our ChatModel, the
Gradio app (gradio_client) and our OpenAI API; then concurrent streams and a hot swap.

    python -m benchmarks.serving [--rounds 3] [--max-tokens 64] [--streams 8]

Everything runs in one go on the embedded model, greedy, with the same thread count per llama.cpp
instance everywhere (the server's default: cores / concurrency), paths interleaved prompt by prompt so
machine noise hits them alike. Tokens/s is measured by the client from its first to its last received
chunk, tokens counted the same way for every path. Prints a table; the last line is a JSON object.
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

        paths = {
            "raw llama-cpp-python": run_raw,
            "ChatModel": run_ours,
            "Gradio app": run_app,
            "OpenAI API": run_api,
        }
        for fn in paths.values():  # warm-up: first-call costs (imports, caches) are not serving overhead
            fn("Say hello.")
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for q in QUESTIONS:
                for name, fn in paths.items():
                    runs[name].append(fn(q))
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
    same = sum(
        a.text == b.text for a, b in zip(runs["raw llama-cpp-python"], runs["Gradio app"], strict=True)
    )
    print(f"identical greedy replies raw vs app: {same}/{len(runs['Gradio app'])}")
    print(f"{args.streams} concurrent streams: API {api_done}/{args.streams} done, {api_agg:.1f} tok/s aggregate; "
          f"app {app_done}/{args.streams} done, {app_agg:.1f} tok/s aggregate")  # fmt: skip
    for e in api_err + app_err:
        print("error:", e)
    swap_load = float(m.group(1)) if m else None
    swap_ms = float(m.group(2)) if m else None
    print(f"hot swap: new version visible to new requests after {visible if visible else float('nan'):.2f} s "
          f"(poll 0.2 s + load {swap_load} s + switch {swap_ms} ms); stream running across it completed: "
          f"{bool(running.get('run') and running['run'].tokens > 0)}")  # fmt: skip
    app_tok, app_ttft = rows["Gradio app"]
    api_tok, api_ttft = rows["OpenAI API"]
    print(
        json.dumps(
            {
                "raw_tok_s": round(raw_tok, 2),
                "chatmodel_tok_s": round(rows["ChatModel"][0], 2),
                "app_tok_s": round(app_tok, 2),
                "api_tok_s": round(api_tok, 2),
                # e2e: a transport that delivers chunks in bursts cannot look faster than it is
                "ratio_app_vs_raw": round(e2e["Gradio app"] / raw_e2e, 3),
                "ratio_api_vs_raw": round(e2e["OpenAI API"] / raw_e2e, 3),
                "ratio_app_vs_raw_decode": round(app_tok / raw_tok, 3),
                "raw_e2e_tok_s": round(raw_e2e, 2),
                "app_e2e_tok_s": round(e2e["Gradio app"], 2),
                "raw_ttft_ms": round(raw_ttft, 1),
                "ttft_overhead_ms": round(app_ttft - raw_ttft, 1),
                "api_ttft_overhead_ms": round(api_ttft - raw_ttft, 1),
                "concurrent_streams": args.streams,
                "concurrent_completed": app_done,
                "aggregate_tok_s": round(app_agg, 2),
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
