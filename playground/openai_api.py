"""An OpenAI-compatible HTTP API beside the Gradio app: ``GET /v1/models`` and ``POST /v1/chat/completions``
(streaming or not), so real OpenAI clients use the model that improves.

The routes are handed to Gradio's own FastAPI app when it is created (``launch(app_kwargs={"routes":
...})``), ahead of Gradio's routes, so one server process serves both and ``--share`` tunnels both.
Model names: ``playground`` is the deployed version (it follows hot swaps); ``version-N`` is version N.
Every API turn is stored like a UI turn (conversation source "api", the caller's identity, the version
that wrote the reply, parameters, prompt and timings). Errors have OpenAI's shape, never a traceback.

Security: with ``--share`` or ``--auth`` (or an ``--api-key``) every request needs
``Authorization: Bearer KEY``, where KEY is the API key or one of the ``USER:PASS`` logins. Requests
count as chat turns against the rate limits (429 with OpenAI's error shape and a Retry-After header),
and go through the content filter like the Chat tab: a blocked request gets 400 with code
"content_filter"; a blocked reply is withheld and ends with finish_reason "content_filter".
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.routing import BaseRoute

from feedback_store.store import FeedbackStore
from feedback_store.text import clean_input
from models.base import ChatMessage, Generation, GenerationError, GenerationResult, SamplingParams
from models.service import ModelService, VersionUnavailable
from playground.chat import turn_record
from playground.safety import Safety
from settings import Settings

log = logging.getLogger(__name__)

DEPLOYED_ALIAS = "playground"
OWNER = "rlhf-playground"
MAX_MESSAGES = 200
MAX_CHARS = 400_000


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else dict(self.headers or {})
        return JSONResponse(body, status_code=self.status, headers=headers or None)


class OpenAIAPI:
    """The API's handlers; everything hangs off the instance (no module state)."""

    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        service: ModelService,
        *,
        max_pending: int | None = None,
        safety: Safety | None = None,
    ):
        self.settings = settings
        self.store = store
        self.service = service
        self.safety = safety or Safety.from_settings(settings, store, service)
        self.logins = dict(settings.safety.auth_pairs())
        self.require_key = bool(settings.server.share or self.logins or settings.safety.api_key)
        # Requests beyond this many in flight get 503 at once instead of queueing without bound.
        self.max_pending = max_pending or max(8, 4 * settings.inference.concurrency)
        # Generations started for the API; a never-read stream still ends and stops counting (self-healing).
        self._inflight: weakref.WeakSet[Generation] = weakref.WeakSet()
        self._inflight_lock = threading.Lock()

    def _busy(self) -> bool:
        with self._inflight_lock:
            return sum(1 for g in self._inflight if g.running) >= self.max_pending

    def _track(self, generation: Generation) -> None:
        with self._inflight_lock:
            self._inflight.add(generation)

    # -- auth ------------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> str:
        """The caller's identity for the log; raises 401 when a key is required and missing or wrong."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        key = self.settings.safety.api_key
        if token and key and hmac.compare_digest(token.encode(), key.encode()):
            return "api-key"
        user, sep, password = token.partition(":")
        if (
            token
            and sep
            and user in self.logins
            and hmac.compare_digest(password.encode(), self.logins[user].encode())
        ):
            return user
        if not self.require_key:
            return "api-anonymous"
        if not key and not self.logins:
            raise APIError(
                401,
                "the API needs a key on a shared server: restart with --api-key KEY",
                type_="authentication_error",
            )
        raise APIError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY' (the --api-key, or USER:PASS of an --auth login)",
            type_="authentication_error",
            code="invalid_api_key",
        )

    # -- models ----------------------------------------------------------------------------------
    def model_list(self) -> dict[str, Any]:
        created = int(time.time())
        data = [{"id": DEPLOYED_ALIAS, "object": "model", "created": created, "owned_by": OWNER}]
        for vid, name in self.service.available_versions():
            data.append(
                {
                    "id": f"version-{vid}",
                    "object": "model",
                    "created": created,
                    "owned_by": OWNER,
                    "name": name,
                }
            )
        return {"object": "list", "data": data}

    def resolve_model(self, model: Any) -> int | None:
        if model == DEPLOYED_ALIAS:
            return None
        if isinstance(model, str) and model.startswith("version-") and model[8:].isdigit():
            vid = int(model[8:])
            if vid not in {v for v, _ in self.service.available_versions()}:
                raise APIError(
                    404,
                    f"model {model!r} does not exist; GET /v1/models lists them",
                    param="model",
                    code="model_not_found",
                )
            return vid
        raise APIError(
            404,
            f"model {model!r} does not exist; use {DEPLOYED_ALIAS!r} (the deployed version) or 'version-N'",
            param="model",
            code="model_not_found",
        )

    # -- request parsing -------------------------------------------------------------------------
    def parse(self, body: Any) -> tuple[list[ChatMessage], SamplingParams, bool, bool, str]:
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        if "model" not in body:
            raise APIError(400, "'model' is required", param="model")
        messages = _parse_messages(body.get("messages"))
        n = body.get("n", 1)
        if n not in (1, None):
            raise APIError(400, "only n=1 is supported", param="n")
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        defaults = SamplingParams()
        try:
            params = SamplingParams(
                temperature=_number(body, "temperature", 1.0),
                top_p=_number(body, "top_p", 1.0),
                top_k=int(_number(body, "top_k", 0)),
                max_new_tokens=defaults.max_new_tokens
                if max_tokens is None
                else _int(max_tokens, "max_tokens"),
                repetition_penalty=_number(body, "repetition_penalty", _number(body, "repeat_penalty", 1.0)),
                seed=None if body.get("seed") is None else _int(body["seed"], "seed"),
                stop=tuple(stop or ()),
            )
        except (ValueError, TypeError) as exc:
            raise APIError(400, str(exc)) from exc
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise APIError(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return messages, params, stream, include_usage, str(body["model"])

    # -- logging ---------------------------------------------------------------------------------
    def log_turn(
        self,
        user: str,
        messages: list[ChatMessage],
        result: GenerationResult | None,
        *,
        input_moderation: dict | None = None,
        output_moderation: dict | None = None,
    ) -> None:
        """Store the request's history and the reply, as the Chat tab does for a UI turn (a refused
        request: its history only, the last message carrying the decision)."""
        try:
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
            conversation = self.store.create_conversation(user, source="api", system_prompt=system)
            parent = None
            history = messages[1:] if system is not None else messages
            for i, m in enumerate(history):
                last = i == len(history) - 1
                parent = self.store.add_message(
                    conversation,
                    m["role"],
                    m["content"],
                    parent_id=parent,
                    moderation=input_moderation if last else None,
                )
            if result is not None:
                record = turn_record(result)
                if output_moderation is not None:
                    record = dataclasses.replace(record, moderation=output_moderation)
                self.store.add_assistant_message(conversation, parent, record)
        except Exception:  # losing a log row must not fail the request that already succeeded
            log.exception("could not store an API turn")

    def screen(self, request: Request, user: str, messages: list[ChatMessage]):
        """Rate limit and content filter for one request: raises APIError; returns the input decision."""
        if limited := self.safety.limited("chat", request, user=user):
            raise APIError(
                429,
                limited.message(),
                type_="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(limited.retry_after_s)},
            )
        users_text = "\n\n".join(m["content"] for m in messages if m["role"] in ("user", "system"))
        return self.safety.check_input(users_text, report_hint=False)

    # -- handlers --------------------------------------------------------------------------------
    async def chat_completions(self, request: Request):
        try:
            user = self.authenticate(request)
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError) as exc:
                raise APIError(400, f"the request body is not valid JSON: {exc}") from exc
            messages, params, stream, include_usage, model = self.parse(body)
            version_id = self.resolve_model(model)
            check = self.screen(request, user, messages)
            if check.refused:
                await anyio.to_thread.run_sync(
                    lambda: self.log_turn(user, messages, None, input_moderation=check.moderation)
                )
                raise APIError(400, _plain(check.refusal), code="content_filter", param="messages")
            if self._busy():
                raise APIError(
                    503,
                    f"the server is busy ({self.max_pending} requests in flight); retry shortly",
                    type_="server_error",
                    code="overloaded",
                )
            generation = await anyio.to_thread.run_sync(
                lambda: self.service.stream(messages, params, version_id=version_id)
            )
            self._track(generation)
        except APIError as exc:
            return exc.response()
        except VersionUnavailable as exc:
            return APIError(404, str(exc), param="model", code="model_not_found").response()
        except ValueError as exc:  # e.g. a system prompt larger than the context
            return APIError(400, str(exc)).response()
        except GenerationError as exc:
            return APIError(500, str(exc), type_="server_error").response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if stream:
            return StreamingResponse(
                self._sse(generation, completion_id, model, user, messages, include_usage, check.moderation),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            result = await anyio.to_thread.run_sync(generation.wait)
        except GenerationError as exc:
            return APIError(500, str(exc), type_="server_error").response()
        finally:
            generation.cancel()
        output = await anyio.to_thread.run_sync(
            lambda: self.safety.check_output(result.text, report_hint=False)
        )
        await anyio.to_thread.run_sync(
            lambda: self.log_turn(
                user, messages, result, input_moderation=check.moderation, output_moderation=output.moderation
            )
        )
        withheld = (output.moderation or {}).get("action") == "withheld"
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": f"version-{result.version_id}",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": _plain(output.shown) if withheld else result.text,
                        },
                        "finish_reason": "content_filter" if withheld else _finish(result),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(result),
            }
        )

    async def _sse(
        self,
        generation: Generation,
        completion_id: str,
        model: str,
        user: str,
        messages: list[ChatMessage],
        include_usage: bool,
        input_moderation: dict | None = None,
    ) -> AsyncIterator[str]:
        created = int(time.time())
        fingerprint = f"version-{generation.version_id}"

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": fingerprint,
                "choices": []
                if usage is not None
                else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        result: GenerationResult | None = None
        pieces = generation.batches()  # tokens that queued while we were sending go out as one chunk
        sent = ""
        filtered = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await anyio.to_thread.run_sync(next, pieces, None)
                if piece is None:
                    break
                if self.safety.check_stream(sent + piece):  # the flagged piece is never sent
                    filtered = True
                    generation.cancel()
                    break
                sent += piece
                yield chunk({"content": piece})
            if filtered:
                result = await anyio.to_thread.run_sync(generation.wait)
            result = generation.result if result is None else result
            assert result is not None
            yield chunk({}, "content_filter" if filtered else _finish(result))
            if include_usage:
                yield chunk({}, usage=_usage(result))
            yield "data: [DONE]\n\n"
        except GenerationError as exc:
            error = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
            yield f"data: {json.dumps(error)}\n\n"
        finally:
            # Runs on the end, on an error and when the client disconnects (the task is cancelled).
            generation.cancel()
            if result is None:
                with anyio.CancelScope(shield=True):
                    try:
                        result = await anyio.to_thread.run_sync(generation.wait)
                    except GenerationError:
                        result = None
            if result is not None:
                final = result
                with anyio.CancelScope(shield=True):
                    output = await anyio.to_thread.run_sync(
                        lambda: self.safety.check_output(final.text, report_hint=False)
                    )
                    await anyio.to_thread.run_sync(
                        lambda: self.log_turn(
                            user,
                            messages,
                            final,
                            input_moderation=input_moderation,
                            output_moderation=output.moderation,
                        )
                    )

    async def models(self, request: Request):
        try:
            self.authenticate(request)
        except APIError as exc:
            return exc.response()
        return JSONResponse(await anyio.to_thread.run_sync(self.model_list))

    def routes(self) -> list[BaseRoute]:
        router = APIRouter()
        router.add_api_route("/v1/models", self.models, methods=["GET"], include_in_schema=False)
        router.add_api_route(
            "/v1/chat/completions", self.chat_completions, methods=["POST"], include_in_schema=False
        )
        return list(router.routes)


def _plain(markdown: str | None) -> str:
    """A UI message without its Markdown emphasis, for API clients."""
    return (markdown or "").replace("**", "").replace("*", "").replace("⚠️ ", "").strip()


def _finish(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _number(body: dict, key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APIError(400, f"'{key}' must be a number", param=key)
    return float(value)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{key}' must be an integer", param=key)
    return value


def _parse_messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    if len(raw) > MAX_MESSAGES:
        raise APIError(400, f"at most {MAX_MESSAGES} messages per request", param="messages")
    messages: list[ChatMessage] = []
    total = 0
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise APIError(
                400,
                f"messages[{i}].role {role!r} is not supported (system, user, assistant)",
                param="messages",
            )
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise APIError(
                        400, f"messages[{i}]: only text content parts are supported", param="messages"
                    )
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", param="messages")
        content = clean_input(content)
        total += len(content)
        messages.append(ChatMessage(role=role, content=content))
    if total > MAX_CHARS:
        raise APIError(400, f"the messages are {total:,} characters; at most {MAX_CHARS:,}", param="messages")
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must be from the user", param="messages")
    if any(m["role"] == "system" for m in messages[1:]):
        raise APIError(400, "a system message is only allowed first", param="messages")
    return messages
