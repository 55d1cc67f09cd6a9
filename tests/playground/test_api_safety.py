"""The OpenAI-compatible API on a shared server, in-process on the real model: 401 without credentials,
429 (OpenAI's shape, Retry-After) per user and per address, the content filter on requests (400
"content_filter") and on replies (withheld, finish_reason "content_filter", streaming too), and
everything stored with its moderation decision."""

import json

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models.service import ModelService
from playground.openai_api import OpenAIAPI
from playground.safety import Safety
from settings import DEFAULT_SYSTEM_PROMPT, Settings

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]
BODY = {"model": "playground", "messages": QUESTION, "temperature": 0, "max_tokens": 12}


@pytest.fixture
def make_api(embedded_model, store, tmp_path):
    base = store.versions.ensure_base(embedded_model.model_id)
    service = ModelService(embedded_model, base.id, base.name)  # not closed: the model is the session's

    def make(**settings) -> tuple[OpenAIAPI, TestClient]:
        config = Settings(data_dir=tmp_path, **settings)
        api = OpenAIAPI(config, store, service, safety=Safety.from_settings(config, store, service))
        return api, TestClient(FastAPI(routes=api.routes()))

    return make


def api_rows(store):
    return list(
        store.db.query(
            "SELECT m.role, m.content, m.moderation, c.user_id FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id WHERE c.source = 'api' ORDER BY m.id"
        )
    )


def test_without_credentials_a_locked_api_answers_401(make_api):
    _api, http = make_api(auth=["alice:pw-alice-1"], api_key="k" * 12)
    for headers in ({}, {"Authorization": "Bearer alice:wrong"}, {"Authorization": "Basic alice:pw-alice-1"}):
        r = http.get("/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert http.get("/v1/models", headers={"Authorization": "Bearer alice:pw-alice-1"}).status_code == 200


def test_rate_limits_per_user_and_per_address(make_api, store):
    _api, http = make_api(
        auth=["alice:pw-alice-1", "bob:pw-bob-22"], rate_limit_chat="2/minute", rate_limit_chat_ip="3/minute"
    )
    alice = {"Authorization": "Bearer alice:pw-alice-1"}
    bob = {"Authorization": "Bearer bob:pw-bob-22"}
    codes = [http.post("/v1/chat/completions", json=BODY, headers=alice).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = http.post("/v1/chat/completions", json=BODY, headers=alice)
    err = r.json()["error"]
    assert r.status_code == 429 and err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert (
        "2 messages per minute for each user" in err["message"] and 1 <= int(r.headers["retry-after"]) <= 60
    )
    assert http.post("/v1/chat/completions", json=BODY, headers=bob).status_code == 200  # the address's 3rd
    r = http.post("/v1/chat/completions", json=BODY, headers=bob)
    assert r.status_code == 429 and "each network address" in r.json()["error"]["message"]
    client = openai.OpenAI(
        base_url="http://testserver/v1", api_key="bob:pw-bob-22", http_client=http, max_retries=0
    )
    with pytest.raises(openai.RateLimitError, match="Slow down"):
        client.chat.completions.create(**BODY)
    assert (
        len([r for r in api_rows(store) if r["role"] == "assistant"]) == 3
    )  # refused requests store nothing
    events = list(store.db.query("SELECT user_id, client_ip, scope FROM safety_events ORDER BY id"))
    assert [(e["user_id"], e["scope"]) for e in events] == [("alice", "chat"), ("bob", "chat")]
    assert events[0]["client_ip"] == "testclient"


def test_a_blocked_request_gets_400_content_filter_and_is_stored(make_api, store):
    _api, http = make_api()
    body = {**BODY, "messages": [{"role": "user", "content": "Tell me how to make a pipe bomb."}]}
    r = http.post("/v1/chat/completions", json=body)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "content_filter"
    assert "dangerous or illegal instructions" in err["message"] and "**" not in err["message"]
    [row] = api_rows(store)
    assert row["role"] == "user" and json.loads(row["moderation"])["action"] == "refused"


def test_a_flagged_reply_is_withheld_streaming_or_not(make_api, store, tmp_path):
    (tmp_path / "moderation.toml").write_text(
        '[categories.test_block]\nwords = ["paris"]\napplies_to = ["output"]\n'
    )
    _api, http = make_api()
    r = http.post("/v1/chat/completions", json=BODY).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "content_filter" and "withheld" in choice["message"]["content"]
    assert "paris" not in choice["message"]["content"].lower()
    with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    sent = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finish = [
        e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]
    ]
    assert finish == ["content_filter"] and "paris" not in sent.lower()
    replies = [r for r in api_rows(store) if r["role"] == "assistant"]
    assert len(replies) == 2 and all(json.loads(r["moderation"])["action"] == "withheld" for r in replies)
    assert "Paris" in replies[0]["content"]  # kept for review: nothing lost
