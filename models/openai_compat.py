"""openai_compat backend: any OpenAI-compatible chat-completions server (vLLM, llama.cpp's server,
llama-cpp-python's server, Ollama). This is how a deployment outgrows one machine: the playground keeps
the UI, the logging and the training loop; the remote server generates.

An output constraint (``SamplingParams.json_schema``) is passed on as ``response_format``: ``json_object``
for the any-object schema, otherwise ``json_schema`` with ``strict: true``. A server that cannot honour it
answers with an error, which surfaces as a GenerationError; nothing is dropped on the way.

We do not know the remote chat template, so the "prompt sent" stored with each reply is the JSON list
of messages. Token counts for fitting the context are estimated (3 characters per token, on the safe
side); the remote server's own usage numbers are used when it reports them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlparse

from models.base import (
    BaseChatModel,
    ChatMessage,
    Generation,
    GenerationError,
    GenerationResult,
    ModelLoadError,
    SamplingParams,
)
from models.context import fit_to_context
from models.grammar import ANY_OBJECT

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # conservative: English averages ~4, so estimates err towards trimming early


def normalise_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both mean ``http://host:8000/v1``."""
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url if url.endswith("/v1") else url + "/v1"


class OpenAICompatChatModel(BaseChatModel):
    """A model on a remote OpenAI-compatible server, streamed over server-sent events."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        n_ctx: int = 4096,
        timeout_s: float = 600.0,
        max_concurrency: int = 8,
        send_extra_params: bool | None = None,
    ):
        import openai

        self.base_url = normalise_base_url(url)
        host = urlparse(self.base_url).hostname or ""
        # top_k / repetition penalty are not OpenAI parameters: api.openai.com rejects them, the
        # open-source servers accept them (llama.cpp: repeat_penalty, vLLM: repetition_penalty).
        self.send_extra_params = (
            not host.endswith("openai.com") if send_extra_params is None else send_extra_params
        )
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=0
        )
        try:
            available = [m.id for m in self.client.models.list(timeout=15)]
        except openai.APIError as exc:
            raise ModelLoadError(
                f"cannot reach an OpenAI-compatible server at {self.base_url}: {exc}. Is it running, and is "
                "the URL right (e.g. http://127.0.0.1:8000/v1)?"
            ) from exc
        if model is None:
            if not available:
                raise ModelLoadError(f"{self.base_url} lists no models; pass --remote-model NAME")
            model = available[0]
        elif available and model not in available:
            raise ModelLoadError(f"{self.base_url} has no model {model!r}; it serves: {', '.join(available)}")
        self.model = model
        self.model_id = f"{self.base_url}#{model}"
        self.display_name = f"{model} @ {host}"
        self.context_length = n_ctx
        self._slots = threading.BoundedSemaphore(max_concurrency)

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        return json.dumps(
            [{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False
        )

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + 1

    def stream(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        import openai

        t_request = time.perf_counter()
        params = params.with_seed()
        fitted = fit_to_context(
            messages,
            render=self.render_prompt,
            count_tokens=self.count_tokens,
            context_length=self.context_length,
            max_new_tokens=params.max_new_tokens,
        )
        request = dict(
            model=self.model,
            messages=[{"role": m["role"], "content": m["content"]} for m in fitted.messages],
            stream=True,
            max_tokens=fitted.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
        )
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = list(params.stop)
        if params.json_schema is not None:
            request["response_format"] = response_format(params.json_schema)
        if self.send_extra_params:
            request["extra_body"] = {
                "top_k": params.top_k,  # 0 = off for llama.cpp and vLLM alike
                "repeat_penalty": params.repetition_penalty,
                "repetition_penalty": params.repetition_penalty,
            }

        def produce(emit: Callable[[str], None], cancel: threading.Event) -> GenerationResult:
            while not self._slots.acquire(timeout=0.1):
                if cancel.is_set():
                    return self._result("", fitted, params, 0, None, "cancelled", t_request, t_request, None)
            t_start = time.perf_counter()
            pieces: list[str] = []
            chunks = 0
            t_first = None
            finish = "stop"
            usage = None
            try:
                stream = self.client.chat.completions.create(**request)
                try:
                    for chunk in stream:
                        if cancel.is_set():
                            finish = "cancelled"
                            break
                        if getattr(chunk, "usage", None):
                            usage = chunk.usage
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        text = choice.delta.content if choice.delta else None
                        if text:
                            if t_first is None:
                                t_first = time.perf_counter()
                            chunks += 1
                            pieces.append(text)
                            emit(text)
                        if choice.finish_reason:
                            finish = "length" if choice.finish_reason == "length" else "stop"
                finally:
                    stream.close()  # closing the connection makes the server stop generating
            except openai.APIStatusError as exc:
                raise GenerationError(f"{self.base_url} answered {exc.status_code}: {_message(exc)}") from exc
            except openai.APIError as exc:
                raise GenerationError(f"{self.base_url} failed: {exc}") from exc
            finally:
                self._slots.release()
            n_out = usage.completion_tokens if usage is not None else chunks
            prompt_tokens = usage.prompt_tokens if usage is not None else None
            return self._result(
                "".join(pieces), fitted, params, n_out, t_first, finish, t_request, t_start, prompt_tokens
            )

        return Generation(produce, name=f"openai-{self.model}")

    def _result(
        self, text, fitted, params, n_out, t_first, finish, t_request, t_start, prompt_tokens
    ) -> GenerationResult:
        prompt_tokens = prompt_tokens if prompt_tokens is not None else fitted.prompt_tokens
        return GenerationResult.timed(
            text, fitted, params, prompt_tokens, n_out, finish, t_request, t_start, t_first, self.display_name
        )

    def close(self) -> None:
        """Nothing to free: the client is stateless, and other versions may share it."""


def response_format(json_schema: str) -> dict:
    """The OpenAI ``response_format`` that asks a remote server for replies matching ``json_schema``."""
    schema = json.loads(json_schema)
    if schema == json.loads(ANY_OBJECT):
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": True}}


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)
