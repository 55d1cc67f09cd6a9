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

No parameter is ignored silently. The request body is validated by playground/openai_types.py; what each
field does here:

- Supported: ``model``, ``messages`` (roles system/developer, user, assistant with ``tool_calls``, tool;
  text content or text parts), ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``,
  ``stop``, ``seed``, ``stream``, ``stream_options.include_usage``, and the llama.cpp/vLLM extensions
  ``top_k``, ``repetition_penalty`` (alias ``repeat_penalty``).
- ``n`` (1 to 8): n replies sampled on one version with seeds seed, seed+1, ... (n > 1 needs a
  temperature above 0), streamed as choices 0..n-1; they are stored as sibling replies of the same user
  message, which the Compare and Rank statistics use.
- ``response_format``: ``text`` (the default); ``json_object`` (any JSON object) and ``json_schema``
  (its ``schema``; ``strict`` or not, replies always follow it) are enforced by the backend, with a
  llama.cpp grammar. A reply with finish_reason "stop" parses and matches the schema; one cut by
  max_tokens ("length") may not. A schema using keywords a grammar cannot enforce (``minimum``,
  ``multipleOf``, most formats, ...) gets 400, and so does a backend with no way to constrain output
  (transformers). The stored turn's params carry the schema.
- ``tools`` / ``tool_choice`` / ``parallel_tool_calls``: see playground/openai_tools.py. Function tools
  only; "none" leaves them out; "auto" (the default with tools) lets the reply be a call or a plain
  answer; "required", a named function and ``allowed_tools`` force a call, returned as ``tool_calls``
  with finish_reason "tool_calls". One call per reply, which both values of ``parallel_tool_calls``
  allow. A streamed reply with tools arrives as one chunk when it is complete (a call is only known to
  be one at its end). ``response_format`` other than text cannot be combined with tools (400).
- Harmless, accepted and ignored: ``user``, ``safety_identifier``, ``metadata``, ``prompt_cache_key``,
  ``prompt_cache_retention``, ``prompt_cache_options``, ``stream_options.include_obfuscation``, a
  message's ``name``; ``store`` (true or absent: every turn is stored anyway), ``service_tier`` ("auto"
  or "default").
- Refused with 400 naming the parameter unless off: ``store: false`` (turns are always stored),
  ``logprobs: true``, ``top_logprobs``, ``logit_bias``, non-zero ``presence_penalty`` /
  ``frequency_penalty`` (use ``repetition_penalty``), ``modalities`` other than ["text"], ``audio``,
  ``prediction``, ``web_search_options``, ``functions`` / ``function_call`` (deprecated: use tools),
  ``reasoning_effort``, ``verbosity``, ``moderation``, other service tiers.
- Any other field: 400 "unknown parameter", naming it.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.routing import BaseRoute

from feedback_store.store import FeedbackStore
from feedback_store.text import clean_input
from models.base import (
    ChatMessage,
    Generation,
    GenerationError,
    GenerationResult,
    SamplingParams,
    UnsupportedParameter,
)
from models.grammar import ANY_OBJECT
from models.service import ModelService, VersionUnavailable
from playground.messages import split_system
from playground.openai_tools import ToolPlan, ToolRequestError, plan_tools, render_history, with_instructions
from playground.openai_types import ChatCompletionRequest, describe
from playground.replies import END, Answerer, Interleaved, turn_record
from playground.safety import OutputCheck, Safety
from settings import Settings

log = logging.getLogger(__name__)

DEPLOYED_ALIAS = "playground"
OWNER = "rlhf-playground"
MAX_CHARS = 400_000
MAX_N = 8  # choices per request: each holds a model instance while it runs, so keep it small

# SamplingParams' field (first word of its error) -> the request field that set it
_PARAM_OF_FIELD = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_new_tokens": "max_tokens",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
    "stop": "stop",
}


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


@dataclass(frozen=True)
class ChatRequest:
    """A validated request, in the model layer's terms."""

    model: str
    messages: list[
        ChatMessage
    ]  # what the model sees: tool results as user messages, tools in the system prompt
    params: SamplingParams  # json_schema set by response_format or by the tools
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    tools: ToolPlan | None = None  # replies are tool calls (or, "auto", plain answers) to decode
    constraint: str | None = None  # the request field behind params.json_schema, for error messages


def parse_request(body: Any) -> ChatRequest:
    """Validate a request body (pure: no model, no store); raises APIError (400) naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        param, message = describe(exc)
        raise APIError(400, message, param=param) from None
    if refused := req.refused():
        raise APIError(400, refused[1], param=refused[0])
    n = 1 if req.n is None else req.n
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"n must be between 1 and {MAX_N}, got {n}", param="n")
    temperature = 1.0 if req.temperature is None else req.temperature
    if n > 1 and temperature == 0:
        raise APIError(
            400, "n > 1 with temperature 0 would give n identical replies; raise the temperature", param="n"
        )
    try:
        plan = plan_tools(req.tools, req.tool_choice)
        messages = _checked_messages(render_history(req.messages))
    except ToolRequestError as exc:
        raise APIError(400, str(exc), param=exc.param) from None
    schema = constraint = None
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        if plan is not None:
            raise APIError(
                400,
                "response_format cannot be combined with tools: a reply is then a tool call or a plain answer; "
                "send tool_choice 'none' or leave response_format out",
                param="response_format",
            )
        spec = fmt.json_schema
        schema = ANY_OBJECT if spec is None or spec.schema_ is None else json.dumps(spec.schema_)
        constraint = "response_format"
    elif plan is not None:
        messages = with_instructions(messages, plan)
        schema, constraint = json.dumps(plan.schema()), "tools"
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    repetition = req.repetition_penalty if req.repetition_penalty is not None else req.repeat_penalty
    try:
        params = SamplingParams(
            temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=0 if req.top_k is None else req.top_k,
            max_new_tokens=SamplingParams().max_new_tokens if max_tokens is None else max_tokens,
            repetition_penalty=1.0 if repetition is None else repetition,
            seed=req.seed,
            stop=tuple(req.stop or ()),
            json_schema=schema,
        )
    except ValueError as exc:
        first = str(exc).split(" ", 1)[0].rstrip(":")
        raise APIError(400, str(exc), param=_PARAM_OF_FIELD.get(first, constraint)) from None
    return ChatRequest(
        model=req.model,
        messages=messages,
        params=params,
        n=n,
        stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        tools=plan,
        constraint=constraint,
    )


def _checked_messages(history: list[tuple[str, str]]) -> list[ChatMessage]:
    messages = [ChatMessage(role=role, content=clean_input(text)) for role, text in history]
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_CHARS:
        raise APIError(400, f"the messages are {total:,} characters; at most {MAX_CHARS:,}", param="messages")
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must be from the user (or a tool result)", param="messages")
    if any(m["role"] == "system" for m in messages[1:]):
        raise APIError(400, "a system message is only allowed first", param="messages")
    return messages


class OpenAIAPI(Answerer):
    """The API's handlers; everything hangs off the instance (no module state)."""

    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        service: ModelService,
        *,
        safety: Safety,
        max_pending: int | None = None,
    ):
        super().__init__(settings, store, service, safety=safety)
        self.logins = dict(settings.safety.auth_pairs())
        self.require_key = bool(settings.server.share or self.logins or settings.safety.api_key)
        # Generations beyond this many in flight get 503 at once instead of queueing without bound.
        self.max_pending = max_pending or max(8, 4 * settings.inference.concurrency)
        # Generations started for the API; a never-read stream still ends and stops counting (self-healing).
        self._inflight: weakref.WeakSet[Generation] = weakref.WeakSet()
        self._inflight_lock = threading.Lock()

    def _busy(self, starting: int = 1) -> bool:
        """Whether ``starting`` more generations would exceed max_pending (one request always may run)."""
        with self._inflight_lock:
            running = sum(1 for g in self._inflight if g.running)
        return running > 0 and running + starting > self.max_pending

    def _track(self, generations: list[Generation]) -> None:
        with self._inflight_lock:
            self._inflight.update(generations)

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
    @staticmethod
    def parse(body: Any) -> ChatRequest:
        return parse_request(body)

    # -- logging ---------------------------------------------------------------------------------
    def log_turn(
        self,
        user: str,
        messages: list[ChatMessage],
        results: list[GenerationResult],
        *,
        input_moderation: dict | None = None,
        output_moderations: list[dict | None] | None = None,
    ) -> None:
        """Store the request's history and its replies, as the Chat tab does for a UI turn: n replies are
        siblings (children of the same last message). A refused request: its history only, the last
        message carrying the decision."""
        try:
            system, history = split_system(messages)
            conversation = self.store.create_conversation(user, source="api", system_prompt=system)
            parent = None
            for i, m in enumerate(history):
                last = i == len(history) - 1
                parent = self.store.add_message(
                    conversation,
                    m["role"],
                    m["content"],
                    parent_id=parent,
                    moderation=input_moderation if last else None,
                )
            for i, result in enumerate(results):
                moderation = output_moderations[i] if output_moderations else None
                self.store.add_assistant_message(
                    conversation, parent, turn_record(result, moderation=moderation)
                )
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
            req = self.parse(body)
            version_id = self.resolve_model(req.model)
            check = self.screen(request, user, req.messages)
            if check.refused:
                await anyio.to_thread.run_sync(
                    lambda: self.log_turn(user, req.messages, [], input_moderation=check.moderation)
                )
                raise APIError(400, _plain(check.refusal), code="content_filter", param="messages")
            if self._busy(req.n):
                raise APIError(
                    503,
                    f"the server is busy ({self.max_pending} generations in flight); retry shortly",
                    type_="server_error",
                    code="overloaded",
                )
            try:
                generations = await anyio.to_thread.run_sync(
                    lambda: self.service.stream_n(req.messages, req.params, req.n, version_id=version_id)
                )
            except UnsupportedParameter as exc:  # the backend cannot honour the constraint: say which field
                param = req.constraint or exc.param
                raise APIError(400, f"{param}: {exc}", param=param) from exc
            self._track(generations)
        except APIError as exc:
            return exc.response()
        except VersionUnavailable as exc:
            return APIError(404, str(exc), param="model", code="model_not_found").response()
        except ValueError as exc:  # e.g. a system prompt larger than the context
            return APIError(400, str(exc)).response()
        except GenerationError as exc:
            return APIError(500, str(exc), type_="server_error").response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(
                self._sse(generations, completion_id, req, user, check.moderation),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            results = await anyio.to_thread.run_sync(lambda: [g.wait() for g in generations])
        except GenerationError as exc:
            return APIError(500, str(exc), type_="server_error").response()
        finally:
            for g in generations:
                g.cancel()
        outputs = await anyio.to_thread.run_sync(
            lambda: [self.safety.check_output(r.text, report_hint=False) for r in results]
        )
        await anyio.to_thread.run_sync(
            lambda: self.log_turn(
                user,
                req.messages,
                results,
                input_moderation=check.moderation,
                output_moderations=[o.moderation for o in outputs],
            )
        )
        choices = []
        for i, (result, output) in enumerate(zip(results, outputs, strict=True)):
            message, finish = _reply(result, output, req.tools)
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
                "system_fingerprint": f"version-{results[0].version_id}",
                "choices": choices,
                "usage": _usage(results),
            }
        )

    async def _sse(
        self,
        generations: list[Generation],
        completion_id: str,
        req: ChatRequest,
        user: str,
        input_moderation: dict | None = None,
    ) -> AsyncIterator[str]:
        created = int(time.time())
        fingerprint = f"version-{generations[0].version_id}"

        def event(choices: list[dict[str, Any]], usage: dict | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "system_fingerprint": fingerprint,
                "choices": choices,
            }
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
            return event([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}])

        n = len(generations)
        # tokens that queued while a piece was being sent go out as one chunk (``batches``)
        merged = Interleaved([g.batches() for g in generations])
        pieces = merged.with_ends()
        sent = [""] * n
        filtered = [False] * n
        outputs: list[OutputCheck | None] = [None] * n
        try:
            for i in range(n):
                yield chunk(i, {"role": "assistant", "content": ""})
            while (step := await anyio.to_thread.run_sync(next, pieces, None)) is not None:
                i, item = step
                if item is not END:
                    # with tools the reply is decoded when complete; a withheld choice sends nothing more
                    if req.tools is None and not filtered[i]:
                        if self.safety.check_stream(sent[i] + item):  # the flagged piece is never sent
                            filtered[i] = True
                            generations[i].cancel()
                        else:
                            sent[i] += item
                            yield chunk(i, {"content": item})
                    continue
                result = generations[i].result  # choice i has ended
                if result is None:  # it failed: wait() re-raises its error (an error event, below)
                    result = generations[i].wait()
                if req.tools is None:
                    yield chunk(i, {}, "content_filter" if filtered[i] else _finish(result))
                    continue
                output = await anyio.to_thread.run_sync(
                    lambda r=result: self.safety.check_output(r.text, report_hint=False)
                )
                outputs[i] = output
                message, finish = _reply(result, output, req.tools)
                if "tool_calls" in message:
                    delta = {"tool_calls": [{"index": 0, **message["tool_calls"][0]}]}
                else:
                    delta = {"content": message["content"]}
                yield chunk(i, delta)
                yield chunk(i, {}, finish)
            if req.include_usage:
                yield event([], usage=_usage([g.result for g in generations if g.result is not None]))
            yield "data: [DONE]\n\n"
        except Exception as exc:  # a backend failure (GenerationError) ends the stream with an error event
            error = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
            yield f"data: {json.dumps(error)}\n\n"
        finally:
            # Runs on the end, on an error and when the client disconnects (the task is cancelled).
            for g in generations:
                g.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(merged.join)
                done = [(g.result, outputs[i]) for i, g in enumerate(generations) if g.result is not None]
                if done:
                    checks = await anyio.to_thread.run_sync(
                        lambda: [
                            o if o is not None else self.safety.check_output(r.text, report_hint=False)
                            for r, o in done
                        ]
                    )
                    await anyio.to_thread.run_sync(
                        lambda: self.log_turn(
                            user,
                            req.messages,
                            [r for r, _ in done],
                            input_moderation=input_moderation,
                            output_moderations=[c.moderation for c in checks],
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


def _reply(
    result: GenerationResult, output: OutputCheck, plan: ToolPlan | None
) -> tuple[dict[str, Any], str]:
    """A choice's message and finish_reason: withheld, a tool call, the plain answer, or the text."""
    if (output.moderation or {}).get("action") == "withheld":
        return {"role": "assistant", "content": _plain(output.shown)}, "content_filter"
    if plan is not None and result.finish_reason == "stop":
        decoded = plan.decode(result.text)
        if decoded.call is not None:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [decoded.call.to_openai()],
            }, "tool_calls"
        if decoded.content is not None:
            return {"role": "assistant", "content": decoded.content}, "stop"
    return {"role": "assistant", "content": result.text}, _finish(result)


def _plain(markdown: str | None) -> str:
    """A UI message without its Markdown emphasis, for API clients."""
    return (markdown or "").replace("**", "").replace("*", "").replace("⚠️ ", "").strip()


def _finish(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _usage(results: list[GenerationResult]) -> dict[str, int]:
    """One prompt, n completions (as OpenAI counts them)."""
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
