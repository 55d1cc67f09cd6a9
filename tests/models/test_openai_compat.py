"""The openai_compat backend against a real OpenAI-compatible server: llama-cpp-python's own server
(``python -m llama_cpp.server``) on 127.0.0.1 with the embedded model."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from models.base import ModelLoadError, SamplingParams
from models.embedded import embedded_model_path
from models.loader import load_chat_model
from models.openai_compat import OpenAICompatChatModel, normalise_base_url
from settings import DEFAULT_SYSTEM_PROMPT
from tests.conftest import free_port

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] extras: pip install -e .[test]")
    port = free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_ctx", "2048"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"llama_cpp.server exited: {log.name}"
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                break
        except OSError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def remote(llama_server):
    model = load_chat_model(llama_server.removesuffix("/v1"))  # auto-selected from the URL
    assert isinstance(model, OpenAICompatChatModel)
    return model


def test_streams_a_greedy_answer(remote):
    assert remote.model == "smollm2" and remote.model_id.endswith("#smollm2")
    g = remote.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=40))
    chunks = list(g)
    r = g.result
    assert len(chunks) > 1 and "".join(chunks) == r.text and "Paris" in r.text
    assert r.finish_reason == "stop" and 0 < r.completion_tokens <= 40
    assert json.loads(r.prompt) == QUESTION  # the remote template is unknown: the messages are the prompt
    assert r.ttft_s and r.ttft_s > 0


def test_length_stop_and_seed(remote):
    r = remote.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=3))
    assert r.finish_reason == "length" and r.completion_tokens <= 3
    r = remote.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=40, stop=("Paris",)))
    assert "Paris" not in r.text and r.text
    p = SamplingParams(temperature=1.0, seed=42, max_new_tokens=12)
    assert remote.generate(QUESTION, p).text == remote.generate(QUESTION, p).text


def test_cancel_closes_the_stream(remote):
    g = remote.stream(
        [{"role": "user", "content": "Write a very long story."}],
        SamplingParams(temperature=0.8, max_new_tokens=400),
    )
    next(g)
    g.cancel()
    r = g.wait()
    assert r.finish_reason == "cancelled" and r.completion_tokens < 400
    assert remote.generate(
        QUESTION, SamplingParams(temperature=0, max_new_tokens=4)
    ).text  # server still fine


def test_server_errors_and_bad_urls_are_clear(llama_server):
    with pytest.raises(ModelLoadError, match="has no model 'nope'"):
        OpenAICompatChatModel(llama_server, model="nope")
    port = free_port()  # nothing listens there
    with pytest.raises(ModelLoadError, match="cannot reach an OpenAI-compatible server"):
        OpenAICompatChatModel(f"http://127.0.0.1:{port}")
    assert normalise_base_url("http://h:1/v1/chat/completions") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/") == "http://h:1/v1"
