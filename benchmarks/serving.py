"""Serving overhead: the same prompts and parameters through raw llama-cpp-python, our ChatModel, the
Gradio app, our OpenAI API and llama-cpp-python's own server; then concurrent streams and a hot swap.

    python -m benchmarks.serving [--rounds 3] [--max-tokens 64] [--streams 8] [--quick]

Everything runs in one go on the embedded model, greedy, with the same thread count per llama.cpp
instance everywhere (the app's default: cores / concurrency), paths interleaved prompt by prompt so
machine noise hits them alike. The app (``launch.py``) and ``python -m llama_cpp.server`` run as real
server processes. The app's chat event and its inputs are read from the running app's ``/config``
(benchmarks/gradio_chat.py), and the other paths copy the app's sampling defaults (top-p, top-k,
repetition penalty) with temperature 0. llama_cpp.server gets the same n_threads and n_ctx and renders
the GGUF's own chat template, as the app does (the table says how many greedy replies came out
identical); it runs one model and queues concurrent requests, the app runs ``--concurrency`` instances.

Tokens/s is measured by the client from its first to its last received chunk, tokens counted with one
tokenizer for every path, on the reply without surrounding whitespace (which the chat display strips).
The app is measured twice: speaking Gradio's SSE queue protocol as the browser does (the ``app_*``
keys; its time to first token runs from sending the message, the submit event included) and with
gradio_client, which polls every 50 ms (``*_gradio_client_*``). ``ratio_*`` compare end-to-end rates
(tokens / (request -> last chunk)). ``--quick`` uses 1 round of 3 prompts, 16 tokens and 2 streams.
Prints a table; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ROOT, quick
from benchmarks.gradio_chat import BrowserProtocol, find_chat_event, gradio_client_reply, wait_http

SYSTEM = "You are a knowledgeable assistant. Give short, correct answers."
QUESTIONS = [
    "Tell me about the Moon.",
    "Describe how bread is made.",
    "Write a short story about a cat.",
    "Explain why the sky is blue.",
    "What should I pack for a weekend hike?",
    "Describe the city of Paris.",
]
N_CTX = 4096  # the app's default context; every other path gets the same
RAW = "raw llama-cpp-python"
CHATMODEL = "ChatModel"
APP = "Gradio app (SSE)"
APP_CLIENT = "Gradio app (client)"
API = "our /v1 API"
PEER = "llama_cpp.server"
QUICK = {"rounds": 1, "prompts": 3, "max_tokens": 16, "streams": 2}


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


def measure(chunks: Iterable[str], t_request: float, count: Callable[[str], int]) -> Run:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(
    data_dir: Path, port: int, concurrency: int, threads: int
) -> tuple[subprocess.Popen, list[str]]:
    """``launch.py`` with as few flags as possible: those names stay stable while settings change."""
    flags = ["--port", str(port), "--no-open-browser", "--data-dir", str(data_dir), "--no-scheduler",
             "--concurrency", str(concurrency), "--threads", str(threads)]  # fmt: skip
    # The hot swap is seen sooner with a short version poll; an environment variable, not a flag, so a
    # renamed setting costs only a slower swap (the figure is printed with the interval asked for).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PLAYGROUND_VERSION_POLL_S": "0.2"}
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *flags], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env)  # fmt: skip
    return proc, flags


# llama-cpp-python's default native build crashes on AMX CPUs in its extra buffer types; our ChatModel
# turns them off there (models.llamacpp.model_params_without_extra_buffers), so the raw baseline and
# llama_cpp.server must too, with the same patch, or they would crash (or, on a fixed build, run other
# kernels than the app).
_NO_EXTRA_BUFFERS = """
import runpy, sys
from models.llamacpp import model_params_without_extra_buffers
sys.argv[0] = "llama_cpp.server"
with model_params_without_extra_buffers():
    runpy.run_module("llama_cpp.server", run_name="__main__")
"""


def needs_no_extra_buffers() -> bool:
    from models.llamacpp import build_has_amx, cpu_has_amx

    return cpu_has_amx() and build_has_amx()


def no_extra_buffers(active: bool) -> contextlib.AbstractContextManager:
    from models.llamacpp import model_params_without_extra_buffers

    return model_params_without_extra_buffers() if active else contextlib.nullcontext()


def start_peer(
    model: Path, port: int, threads: int, log_path: Path, patch: bool
) -> tuple[subprocess.Popen, list[str]]:
    """llama-cpp-python's own OpenAI server, configured like the app's instances."""
    flags = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX),
             "--n_threads", str(threads), "--n_threads_batch", str(threads),
             # its default True computes logits for every prompt token; no other path does
             "--logits_all", "False",
             # its default True ends a running stream when the next request arrives: concurrent
             # streams would be cut short instead of queued
             "--interrupt_requests", "False",
             "--verbose", "False"]  # fmt: skip
    # No --chat_format: left unset, llama-cpp-python renders the GGUF's own template
    # ("chat_template.default"), which is what the app renders for this model.
    cmd = [sys.executable, "-c", _NO_EXTRA_BUFFERS] if patch else [sys.executable, "-m", "llama_cpp.server"]
    log = log_path.open("w")
    proc = subprocess.Popen([*cmd, *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return proc, flags


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def concurrent(fns: Sequence[Callable[[str], Run]]) -> tuple[int, float, list[str]]:
    """Run one stream per prepared callable at once; (completed, tokens / wall time, errors)."""
    n = len(fns)
    results: list[Run | None] = [None] * n
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            results[i] = fns[i](QUESTIONS[i % len(QUESTIONS)])
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument(
        "--prompts", type=int, default=len(QUESTIONS), help=f"how many of the {len(QUESTIONS)} prompts to use"
    )
    ap.add_argument("--concurrency", type=int, default=2, help="the app's model instances (default 2)")
    ap.add_argument("--port", type=int, help="the app's port (default: a free one)")
    ap.add_argument("--peer-port", type=int, help="llama_cpp.server's port (default: a free one)")
    args, applied = quick.parse(ap, QUICK, argv)
    if not 1 <= args.prompts <= len(QUESTIONS):
        ap.error(f"--prompts must be 1 to {len(QUESTIONS)}")
    questions = QUESTIONS[: args.prompts]
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import httpx
    import openai
    from gradio_client import Client
    from llama_cpp import Llama

    from feedback_store.store import FeedbackStore
    from models.base import SamplingParams
    from models.embedded import embedded_model_path
    from models.llamacpp import LlamaCppChatModel
    from models.lora_agreement import make_random_gguf_lora

    threads = max(1, (os.cpu_count() or 1) // args.concurrency)  # what the app gives each instance
    path = embedded_model_path()
    patch = needs_no_extra_buffers()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    app_port, peer_port = args.port or free_port(), args.peer_port or free_port()
    # Both servers start at once: their start-up is not what is measured.
    server, app_flags = start_app(data_dir, app_port, args.concurrency, threads)
    peer, peer_flags = start_peer(path, peer_port, threads, data_dir / "llama_cpp_server.log", patch)
    try:
        url = f"http://127.0.0.1:{app_port}/"
        peer_url = f"http://127.0.0.1:{peer_port}/v1"
        wait_http(url, server, 180, data_dir / "server.log")
        wait_http(peer_url + "/models", peer, 180, data_dir / "llama_cpp_server.log")

        chat = find_chat_event(httpx.get(url + "config", timeout=30).json())
        sampling = {"top_p": 0.95, "top_k": 40, "repetition_penalty": 1.1}
        missing = sorted(set(sampling) - set(chat.sampling_defaults))
        sampling.update(chat.sampling_defaults)
        top_p, top_k, rep = sampling["top_p"], int(sampling["top_k"]), sampling["repetition_penalty"]

        ours = LlamaCppChatModel(path, pool_size=1, n_threads=threads, n_ctx=N_CTX)
        with no_extra_buffers(patch):
            raw = Llama(
                model_path=str(path), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False
            )

        def count(text: str) -> int:
            # One tokenizer for every path (the model's own, no BOS), on the text without surrounding
            # whitespace: the chat display strips it, so the app never shows a trailing "\n\n" the
            # other paths stream, and counting it would bill the app for tokens it did not drop.
            return ours.count_tokens(text.strip()) if text.strip() else 0

        api = openai.OpenAI(base_url=url + "v1", api_key="bench", max_retries=0, timeout=300)
        params = SamplingParams(
            temperature=0, max_new_tokens=args.max_tokens, repetition_penalty=rep, top_k=top_k, top_p=top_p
        )

        def msgs(q):
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]

        def run_raw(q):
            tokens = raw.tokenize(ours.render_prompt(msgs(q)).encode(), add_bos=False, special=True)
            t = time.perf_counter()
            stream = raw.create_completion(
                prompt=tokens, max_tokens=args.max_tokens, temperature=0, top_p=top_p, top_k=top_k,
                min_p=0.0, repeat_penalty=rep, stream=True,
            )  # fmt: skip
            return measure((c["choices"][0]["text"] for c in stream), t, count)

        def run_ours(q):
            t = time.perf_counter()
            return measure(ours.stream(msgs(q), params), t, count)

        def openai_run(client, extra):
            def run(q):
                t = time.perf_counter()
                stream = client.chat.completions.create(
                    model="playground", messages=msgs(q), temperature=0, max_tokens=args.max_tokens,
                    top_p=top_p, stream=True, extra_body=extra,
                )  # fmt: skip
                return measure((c.choices[0].delta.content or "" for c in stream if c.choices), t, count)

            return run

        run_api = openai_run(api, {"top_k": top_k, "repetition_penalty": rep})
        peer_api = openai.OpenAI(base_url=peer_url, api_key="bench", max_retries=0, timeout=600)
        # llama_cpp.server's own names; min_p off as everywhere else (its default is 0.05)
        peer_extra = {"top_k": top_k, "repeat_penalty": rep, "min_p": 0.0}
        run_peer = openai_run(peer_api, peer_extra)

        browser = BrowserProtocol(url)

        def sse_run(proto):
            def run(q):
                t = time.perf_counter()
                return measure(proto.stream_reply(q, SYSTEM, args.max_tokens), t, count)

            return run

        def client_run(client=None):
            def run(q):
                c = client or Client(url, verbose=False)  # a fresh session per question unless given
                t = time.perf_counter()
                return measure(gradio_client_reply(c, chat, q, SYSTEM, args.max_tokens), t, count)

            return run

        paths = {
            RAW: run_raw,
            CHATMODEL: run_ours,
            APP: sse_run(browser),
            APP_CLIENT: client_run(),
            API: run_api,
            PEER: run_peer,
        }
        for fn in paths.values():  # warm-up: first-call costs (imports, caches) are not serving overhead
            fn("Say hello.")
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        # Every path gets every question once per round, in a shifted order: llama.cpp reuses a context's
        # cached prompt prefix, so a server instance must never get the question it answered last (a free
        # cache hit the raw baseline never gets). With the app's instances taking turns, a shift of two
        # questions per path keeps each instance's previous question different from its next.
        replies: dict[tuple[str, str], str] = {}
        t_paths = time.perf_counter()
        for _ in range(args.rounds):
            for k in range(len(questions)):
                for i, (name, fn) in enumerate(paths.items()):
                    q = questions[(k + 2 * i) % len(questions)]
                    run = fn(q)
                    runs[name].append(run)
                    replies[(name, q)] = run.text
        t_paths = time.perf_counter() - t_paths
        raw.close()

        # -- concurrent streams: our API, the app both ways, llama_cpp.server -------------------------
        n = args.streams
        api_done, api_agg, api_err = concurrent([run_api] * n)
        app_done, app_agg, app_err = concurrent([client_run(Client(url, verbose=False)) for _ in range(n)])
        protocols = [BrowserProtocol(url) for _ in range(n)]
        sse_done, sse_agg, sse_err = concurrent([sse_run(p) for p in protocols])
        for p in protocols:
            p.close()
        peer_done, peer_agg, peer_err = concurrent([run_peer] * n)

        # -- hot swap under load (our API) ------------------------------------------------------------
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
        browser.close()
    finally:
        stop(server)
        stop(peer)

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    rows = {name: (med(r.tok_s for r in rs), med(r.ttft_s for r in rs) * 1000) for name, rs in runs.items()}
    e2e = {name: med(r.e2e_tok_s for r in rs) for name, rs in runs.items()}
    raw_tok, raw_ttft = rows[RAW]
    raw_e2e = e2e[RAW]
    print(f"\n{len(questions)} prompts x {args.rounds} rounds x {len(paths)} paths in {t_paths:.0f} s, greedy "
          f"(temperature 0; top-p {top_p}, top-k {top_k}, repetition penalty {rep} from the app's controls"
          f"{'; not found in the app, defaults used: ' + ', '.join(missing) if missing else ''}), "
          f"{args.max_tokens} new tokens max, n_ctx {N_CTX}")  # fmt: skip
    print(f"threads: {threads} per llama.cpp instance on every path (raw n_threads = n_threads_batch = "
          f"{threads}; ChatModel 1 instance; app {args.concurrency} instances x {threads}; llama_cpp.server "
          f"1 instance x {threads}, concurrent requests queue); {os.cpu_count()} CPU cores")  # fmt: skip
    print(
        f"app: launch.py {' '.join(app_flags)} (PLAYGROUND_VERSION_POLL_S=0.2); chat event {chat.describe()}"
    )
    print(f"peer: python -m llama_cpp.server {' '.join(peer_flags)}"
          f"{' (AMX extra buffers off, as in the app)' if patch else ''}")  # fmt: skip
    print("medians; decode = first->last chunk, e2e = tokens / (request->last chunk)")
    print(
        f"{'path':<22} {'decode tok/s':>12} {'vs raw':>7} {'e2e tok/s':>10} {'vs raw':>7} {'TTFT ms':>8} {'+ms':>7}"
    )
    for name, (tok, ttft) in rows.items():
        print(
            f"{name:<22} {tok:>12.1f} {tok / raw_tok:>7.3f} {e2e[name]:>10.1f} {e2e[name] / raw_e2e:>7.3f} "
            f"{ttft:>8.1f} {ttft - raw_ttft:>7.1f}"
        )
    same = {
        name: sum(replies[(RAW, q)].strip() == replies[(name, q)].strip() for q in questions)
        for name in (APP, API, PEER)
    }
    print("identical greedy replies vs raw (last round, surrounding whitespace aside): "
          + ", ".join(f"{name} {k}/{len(questions)}" for name, k in same.items()))  # fmt: skip
    print(f"{n} concurrent streams (tokens / wall time): app (SSE) {sse_done}/{n} done, {sse_agg:.1f} tok/s; "
          f"app (gradio_client) {app_done}/{n}, {app_agg:.1f} tok/s; our API {api_done}/{n}, "
          f"{api_agg:.1f} tok/s; llama_cpp.server {peer_done}/{n}, {peer_agg:.1f} tok/s")  # fmt: skip
    for e in api_err + app_err + sse_err + peer_err:
        print("error:", e)
    swap_load = float(m.group(1)) if m else None
    swap_ms = float(m.group(2)) if m else None
    print(f"hot swap: new version visible to new requests after {visible if visible else float('nan'):.2f} s "
          f"(version poll 0.2 s + load {swap_load} s + switch {swap_ms} ms); stream running across it "
          f"completed: {bool(running.get('run') and running['run'].tokens > 0)}")  # fmt: skip
    app_tok, app_ttft = rows[APP]
    client_tok, client_ttft = rows[APP_CLIENT]
    api_tok, api_ttft = rows[API]
    peer_tok, peer_ttft = rows[PEER]
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                "raw_tok_s": round(raw_tok, 2),
                "chatmodel_tok_s": round(rows[CHATMODEL][0], 2),
                "app_tok_s": round(app_tok, 2),
                "api_tok_s": round(api_tok, 2),
                "llama_cpp_server_tok_s": round(peer_tok, 2),
                # e2e: a transport that delivers chunks in bursts cannot look faster than it is
                "ratio_app_vs_raw": round(e2e[APP] / raw_e2e, 3),
                "ratio_api_vs_raw": round(e2e[API] / raw_e2e, 3),
                "ratio_llama_cpp_server_vs_raw": round(e2e[PEER] / raw_e2e, 3),
                "ratio_api_vs_llama_cpp_server": round(e2e[API] / e2e[PEER], 3),
                "ratio_app_vs_raw_decode": round(app_tok / raw_tok, 3),
                "raw_e2e_tok_s": round(raw_e2e, 2),
                "app_e2e_tok_s": round(e2e[APP], 2),
                "llama_cpp_server_e2e_tok_s": round(e2e[PEER], 2),
                "app_gradio_client_tok_s": round(client_tok, 2),
                "ratio_app_gradio_client_vs_raw": round(e2e[APP_CLIENT] / raw_e2e, 3),
                "ttft_overhead_gradio_client_ms": round(client_ttft - raw_ttft, 1),
                "raw_ttft_ms": round(raw_ttft, 1),
                "ttft_overhead_ms": round(app_ttft - raw_ttft, 1),
                "api_ttft_overhead_ms": round(api_ttft - raw_ttft, 1),
                "llama_cpp_server_ttft_overhead_ms": round(peer_ttft - raw_ttft, 1),
                "identical_replies_app_vs_raw": same[APP],
                "identical_replies_llama_cpp_server_vs_raw": same[PEER],
                "concurrent_streams": n,
                "concurrent_completed": sse_done,
                "aggregate_tok_s": round(sse_agg, 2),
                "gradio_client_concurrent_completed": app_done,
                "gradio_client_aggregate_tok_s": round(app_agg, 2),
                "api_concurrent_completed": api_done,
                "api_aggregate_tok_s": round(api_agg, 2),
                "llama_cpp_server_concurrent_completed": peer_done,
                "llama_cpp_server_aggregate_tok_s": round(peer_agg, 2),
                "hotswap_visible_s": None if visible is None else round(visible, 3),
                "hotswap_load_s": swap_load,
                "hotswap_switch_ms": swap_ms,
                "threads_per_instance": threads,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
