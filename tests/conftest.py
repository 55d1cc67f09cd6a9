"""Shared fixtures: the real embedded model, a real SQLite file, a real server process, real Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M Q4_1 GGUF served by llama.cpp, two instances (shared by the session)."""
    from models.embedded import embedded_model_path
    from models.llamacpp import LlamaCppChatModel

    model = LlamaCppChatModel(embedded_model_path(), pool_size=2, n_threads=1)
    yield model
    model.close()


@pytest.fixture(scope="session")
def hf_base_dir():
    """The embedded GGUF dequantized for transformers: made once (about 15 s) in the folder the quick
    benchmarks share (``benchmarks.quick.hf_cache``), as the app caches it under its data directory.
    Backends, trainers and the quick benchmarks share it, and the base's replay answers cached beside it
    (``DATA_DIR/hf-base/replay``), so a test suite makes those once too."""
    from benchmarks.quick import hf_cache
    from models.embedded import embedded_model_path
    from models.hf_base import ensure_hf_base

    return ensure_hf_base(embedded_model_path(), hf_cache())


@pytest.fixture(scope="session")
def random_lora(hf_base_dir, tmp_path_factory):
    """r=8 LoRA on q/k/v/o + MLP with random non-zero B (seed 0), as a PEFT dir and as a GGUF LoRA."""
    from models.embedded import embedded_model_path
    from models.lora_agreement import make_random_lora
    from models.lora_export import export_peft_lora_to_gguf

    root = tmp_path_factory.mktemp("lora")
    peft_dir = make_random_lora(hf_base_dir, root / "peft", seed=0, b_std=0.1)
    gguf = export_peft_lora_to_gguf(peft_dir, root / "adapter.gguf", base_gguf=embedded_model_path()).path
    return peft_dir, gguf


GPTQ_CALIBRATION = 32  # of the shipped texts: enough for the embedded model's answers to survive 4 bits


def gptq_fixture_cache() -> Path:
    """Where the session's GPTQ copy of the embedded model is kept: the system's temporary folder, shared by
    checkouts (as the dequantized base is), one folder per version of the code that makes it
    (models/gptq.py and the GPTQModel, transformers and torch releases), so that a change to any of them
    quantizes again. Quantizing itself is proved on every run by tests/commands/test_quantize.py."""
    import hashlib
    import tempfile
    from importlib.metadata import version

    parts = [(ROOT / "models" / "gptq.py").read_bytes()]
    parts += [version(package).encode() for package in ("gptqmodel", "transformers", "torch")]
    return (
        Path(tempfile.gettempdir())
        / "playground-test-gptq"
        / hashlib.sha256(b"|".join(parts)).hexdigest()[:12]
    )


@pytest.fixture(scope="session")
def gptq_base_dir(hf_base_dir):
    """The embedded model quantized to GPTQ 4-bit (group size 64) on the CPU with a small calibration set:
    made once (about a minute and a half on two idle cores) in ``gptq_fixture_cache()``, as ``launch.py
    quantize`` caches it under the data directory. Skipped without GPTQModel."""
    from models.embedded import embedded_model_path
    from models.gptq import INSTALL_HINT, ensure_gptq_base, missing_packages

    if missing_packages():
        pytest.skip(INSTALL_HINT)
    cache = gptq_fixture_cache()
    cache.mkdir(parents=True, exist_ok=True)
    return ensure_gptq_base(
        embedded_model_path(),
        cache,
        hf_cache_dir=hf_base_dir.parent,
        calibration=GPTQ_CALIBRATION,
        log_path=cache / "quantize.log",
    )


@pytest.fixture
def store(tmp_path):
    from feedback_store.store import FeedbackStore

    s = FeedbackStore(tmp_path / "test.db")
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python launch.py`` in a subprocess on a free port, with its own data directory."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "launch.py"),
                "--port",
                str(self.port),
                "--no-open-browser",
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def server_factory(tmp_path):
    servers: list[ServerProcess] = []

    def start(*extra: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"server{len(servers)}", *extra, env=env)
        servers.append(server)
        return server.wait_ready()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: apt-get install -y chromium (done by .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()
