"""The request body of ``POST /v1/chat/completions`` as pydantic models, and how validation errors read.

Every field OpenAI defines is declared, so that none is dropped without a decision: supported fields are
typed, harmless ones are accepted and ignored, and the rest are refused when set to anything but their
"off" value (:data:`REFUSED`); the per-field decisions are listed in playground/openai_api.py's
docstring. Undeclared fields are refused (``extra="forbid"``), and the models are strict (``"1"`` is not a
number, ``1`` is not ``true``), as OpenAI is. :func:`describe` turns a ValidationError into one sentence
and the top-level field it concerns, for OpenAI's error shape (``param``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_MESSAGES = 200
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    """One message of the history. ``content`` arrives as text or as text parts, and leaves as text."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None  # a participant's label: accepted, not shown to the model
    tool_calls: list[ToolCall] | None = None  # assistant only
    tool_call_id: str | None = None  # tool only
    refusal: str | None = None  # assistant only: an earlier refusal, shown to the model as its text

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"only text content parts are supported (got {kind!r})")
            texts.append(part["text"])
        return "".join(texts)

    @model_validator(mode="after")
    def _fields_of_the_role(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"tool_calls belong to assistant messages, not to role {self.role!r}")
        if self.refusal is not None and self.role != "assistant":
            raise ValueError(f"refusal belongs to assistant messages, not to role {self.role!r}")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a message with role 'tool' needs the tool_call_id it answers")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError(f"tool_call_id belongs to role 'tool' messages, not to role {self.role!r}")
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or self.refusal)):
            raise ValueError("content is required (an assistant message may have tool_calls instead)")
        return self


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; none: the function takes no arguments
    strict: bool | None = None  # replies always follow the schema here, strict or not


class Tool(_Strict):
    type: Literal["function"]  # OpenAI's "custom" tools (free-form text or Lark grammars) are not supported
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class ToolReference(_Strict):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(_Strict):
    mode: Literal["auto", "required"]
    tools: list[ToolReference] = Field(min_length=1)


class ToolChoiceObject(_Strict):
    type: Literal["function", "allowed_tools"]
    function: NamedFunction | None = None
    allowed_tools: AllowedTools | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ToolChoiceObject:
        if self.type == "function" and (self.function is None or self.allowed_tools is not None):
            raise ValueError('{"type": "function"} takes "function": {"name": ...} (and nothing else)')
        if self.type == "allowed_tools" and (self.allowed_tools is None or self.function is not None):
            raise ValueError('{"type": "allowed_tools"} takes "allowed_tools": {"mode": ..., "tools": [...]}')
        return self


class JSONSchemaFormat(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # replies always follow the schema here, strict or not


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('"json_schema" goes with {"type": "json_schema"}, and only there')
        return self


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # padding against length side channels: none is added


class ChatCompletionRequest(_Strict):
    # supported
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None  # a reply makes at most one call, which both values allow
    # extensions of llama.cpp's and vLLM's servers
    top_k: int | None = None
    repetition_penalty: float | None = None
    repeat_penalty: float | None = None
    # harmless: accepted, and they do not change the reply
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    # refused unless off (REFUSED says when each is off)
    store: bool | None = None
    service_tier: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    moderation: Any = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        if value is None or value in ("none", "auto", "required"):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not a tool choice: use 'none', 'auto', 'required' or an object")
        try:  # validated here so that the error names the problem, not every branch of the union
            return ToolChoiceObject.model_validate(value)
        except ValidationError as exc:
            raise ValueError(describe(exc)[1]) from None

    def refused(self) -> tuple[str, str] | None:
        """The first field set to something this server does not do: (field, why)."""
        for name, (is_off, why) in REFUSED.items():
            value = getattr(self, name)
            if not is_off(value):
                return name, f"'{name}' is not supported by this server: {why}"
        return None


def _none(value: Any) -> bool:
    return value is None


# field -> (is the value "off"?, what to tell the caller otherwise)
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "store": (
        lambda v: v is not False,
        "every turn is stored, it is how the model learns; drop store=false",
    ),
    "service_tier": (
        lambda v: v in (None, "auto", "default"),
        "there is one service tier; use 'auto' or leave it out",
    ),
    "logprobs": (lambda v: not v, "log probabilities are not returned; leave it out or false"),
    "top_logprobs": (_none, "log probabilities are not returned"),
    "logit_bias": (lambda v: not v, "token biases are not applied; leave it out"),
    "presence_penalty": (lambda v: not v, "use repetition_penalty (1 = off, e.g. 1.1) instead"),
    "frequency_penalty": (lambda v: not v, "use repetition_penalty (1 = off, e.g. 1.1) instead"),
    "modalities": (lambda v: v in (None, ["text"]), "replies are text only"),
    "audio": (_none, "replies are text only"),
    "prediction": (_none, "predicted outputs are not supported"),
    "web_search_options": (_none, "there is no web search"),
    "functions": (_none, "the deprecated functions API is not supported; use tools"),
    "function_call": (_none, "the deprecated functions API is not supported; use tool_choice"),
    "reasoning_effort": (_none, "the model has no reasoning-effort setting"),
    "verbosity": (_none, "the model has no verbosity setting; use max_tokens"),
    "moderation": (_none, "the server's own content filter applies to every request"),
}


def describe(exc: ValidationError) -> tuple[str | None, str]:
    """(top-level field, one sentence) for the first problem of a ValidationError."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    kind, msg = first["type"], first["msg"]
    if not loc and kind == "value_error":
        message = msg.removeprefix("Value error, ")
    elif not loc:
        message = "the request body must be a JSON object"
    elif kind == "extra_forbidden":
        message = (
            f"unknown parameter '{path}': this server does not support it"
            if len(loc) == 1
            else f"{path}: unknown field"
        )
    elif kind == "missing":
        message = f"'{path}' is required"
    elif kind == "literal_error":
        message = f"{path} {first.get('input')!r} is not supported; {msg[0].lower()}{msg[1:]}"
    elif kind == "value_error":
        message = f"{path}: {msg.removeprefix('Value error, ')}"
    else:
        message = f"{path}: {msg}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    param = loc[0] if loc and isinstance(loc[0], str) else None
    return param, message
