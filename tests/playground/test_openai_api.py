"""The OpenAI-compatible API beside the Gradio app, used through the official ``openai`` client against a
real server process: models, completions (streaming or not), logging, errors, keys, hot swap."""

import json
import subprocess
import sys
import threading
import time

import openai
import pytest

from feedback_store.store import FeedbackStore
from models.embedded import embedded_model_path
from settings import DEFAULT_SYSTEM_PROMPT
from tests.conftest import ROOT, ServerProcess

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("api-open"), "--version-poll-s", "0.3")
    yield s.wait_ready()
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0, timeout=120)


def small_gguf_lora(tmp_path):
    from models.lora_agreement import make_random_gguf_lora

    return make_random_gguf_lora(embedded_model_path(), tmp_path)


def api_messages(server):
    db = FeedbackStore(server.data_dir / "playground.db")
    try:
        return list(
            db.db.query(
                "SELECT m.*, c.user_id, c.source FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                "WHERE c.source = 'api' AND m.role = 'assistant' ORDER BY m.id"
            )
        )
    finally:
        db.close()


def test_models_and_a_logged_completion(server, client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "playground" and "version-1" in ids
    r = client.chat.completions.create(model="playground", messages=QUESTION, temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    assert "Paris" in text and r.choices[0].finish_reason == "stop"
    assert (
        r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 10 and r.system_fingerprint == "version-1"
    )
    row = api_messages(server)[-1]
    assert row["content"] == text and row["model_version_id"] == 1 and row["user_id"] == "api-anonymous"
    assert json.loads(row["params"])["temperature"] == 0 and "France" in row["prompt"]
    assert row["ttft_ms"] > 0 and row["completion_tokens"] == r.usage.completion_tokens


def test_streaming_with_usage(server, client):
    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model="version-1", messages=QUESTION, temperature=0, max_tokens=40, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    text = "".join(pieces)
    assert "Paris" in text and finish == "stop" and usage.completion_tokens > 0
    deadline = time.monotonic() + 30  # a streamed reply is stored right after its last event
    while api_messages(server)[-1]["content"] != text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api_messages(server)[-1]["content"] == text


def test_bad_requests_get_openai_shaped_errors(server, client):
    import httpx

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="playground", messages=QUESTION, temperature=7)
    with pytest.raises(openai.BadRequestError, match="role 'tool'"):
        client.chat.completions.create(
            model="playground", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]
        )
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 8"):
        client.chat.completions.create(model="playground", messages=QUESTION, n=9)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    r = httpx.post(
        server.url + "v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(server.url).status_code == 200  # the UI is still there


def test_hot_swap_keeps_running_streams_and_logs_versions(server, client, tmp_path):
    store = FeedbackStore(server.data_dir / "playground.db")
    try:
        base = store.versions.deployed(embedded_model_path().name)
        v = store.versions.register_candidate(
            base.base_model, gguf_adapter_path=small_gguf_lora(tmp_path), parent_id=base.id
        )
    finally:
        store.close()
    stream = client.chat.completions.create(
        model="playground", messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
        temperature=0.8, seed=3, max_tokens=150, stream=True,
    )  # fmt: skip
    chunks = iter(stream)
    first = next(chunks)
    assert first.system_fingerprint == f"version-{base.id}"
    deploy = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "deploy", str(v.id), "--db", str(server.data_dir / "playground.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stderr
    deadline = time.monotonic() + 30
    fingerprint = None
    while time.monotonic() < deadline:
        fingerprint = client.chat.completions.create(
            model="playground", messages=QUESTION, temperature=0, max_tokens=2
        ).system_fingerprint
        if fingerprint == f"version-{v.id}":
            break
        time.sleep(0.3)
    assert fingerprint == f"version-{v.id}"  # swapped without a restart
    rest = list(chunks)  # the stream that started before the swap still completes, on the old version
    assert rest and rest[-1].choices[0].finish_reason in ("stop", "length")
    deadline = time.monotonic() + 30  # the reply is stored right after the stream's last event
    while True:
        rows = api_messages(server)
        started_before = [r for r in rows if r["prompt"] and "dragon" in r["prompt"]]
        if started_before or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert started_before and started_before[-1]["model_version_id"] == base.id
    # the stream that started before the swap is stored last (when it ended); the request that saw the
    # new version was written by it
    assert [r["model_version_id"] for r in rows if "France" in r["prompt"]][-1] == v.id
    back = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "rollback", str(base.id), "--db", str(server.data_dir / "playground.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert back.returncode == 0 and "now deployed" in back.stdout


def test_concurrent_streams_all_complete(client):
    results, errors = [], []

    def run(i):
        try:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="playground", messages=QUESTION, temperature=0.7, seed=i, max_tokens=16, stream=True
                )
                if c.choices
            )
            results.append(text)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert errors == [] and len(results) == 4 and all(results)


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory.mktemp("api-auth"), "--auth", "alice:secretpw", "--api-key", "test-key-123456"
    )
    yield s.wait_ready()
    s.stop()


def test_with_auth_the_api_needs_a_key(locked_server):
    url = locked_server.url + "v1"
    for key in ("unused", "alice:wrong"):
        with pytest.raises(openai.AuthenticationError, match="API key"):
            openai.OpenAI(base_url=url, api_key=key, max_retries=0).models.list()
    for key, user in (("test-key-123456", "api-key"), ("alice:secretpw", "alice")):
        c = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
        r = c.chat.completions.create(model="playground", messages=QUESTION, temperature=0, max_tokens=4)
        assert r.choices[0].message.content
        assert api_messages(locked_server)[-1]["user_id"] == user


def test_busy_server_answers_503(embedded_model, store):
    """In-process, with room for one request: a second one while the first streams gets 503."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from models.service import ModelService
    from playground.openai_api import OpenAIAPI
    from playground.safety import Safety
    from settings import Settings

    base = store.versions.ensure_base(embedded_model.model_id)
    service = ModelService(embedded_model, base.id, base.name)  # not closed: the model is the session's
    settings = Settings()
    api = OpenAIAPI(
        settings, store, service, safety=Safety.from_settings(settings, store, service), max_pending=1
    )
    app = FastAPI(routes=api.routes())
    body = {
        "model": "playground",
        "messages": QUESTION,
        "max_tokens": 200,
        "temperature": 0.8,
        "stream": True,
    }
    with TestClient(app) as http, http.stream("POST", "/v1/chat/completions", json=body) as first:
        lines = first.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        second = http.post("/v1/chat/completions", json={**body, "stream": False})
        assert second.status_code == 503 and second.json()["error"]["code"] == "overloaded"
    deadline = time.monotonic() + 60  # the closed stream is cancelled and stops counting
    while api._busy() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not api._busy()


def test_shared_server_without_a_key_keeps_the_api_closed(server_factory):
    s = server_factory("--share", "--public")
    with pytest.raises(openai.AuthenticationError, match="--api-key"):
        openai.OpenAI(base_url=s.url + "v1", api_key="anything", max_retries=0).models.list()
