"""Chat templates: turn a list of chat messages into the exact prompt text a model was trained on.

Templates are Jinja, rendered in a sandbox the way transformers' ``apply_chat_template`` does, so a
model's own template (from GGUF metadata or ``tokenizer_config.json``) renders as it does upstream.
Built in: ``vicuna_v1.1`` (FastChat's ``vicuna_v1.1`` conversation, byte for byte) and ``chatml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.base import ChatMessage

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# FastChat's vicuna_v1.1: sep_style ADD_COLON_TWO, sep=" ", sep2="</s>", roles USER / ASSISTANT.
VICUNA_V1_1 = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = default_system -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- system + ' ' -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + message['content'] + ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' + message['content'] + eos_token -}}"
    "{%- else -%}{{- raise_exception('vicuna_v1.1 supports system, user and assistant messages') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered; the message says what to do."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
_ENV.globals["raise_exception"] = _raise_exception
_ENV.globals["strftime_now"] = _strftime_now


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template plus the special-token texts it refers to."""

    name: str
    source: str
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()  # extra stop strings (besides the model's end-of-generation tokens)
    variables: dict[str, str] = field(default_factory=dict)

    def render(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        try:
            template = _ENV.from_string(self.source)
            return template.render(
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **self.variables,
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template {self.name!r} failed to render: {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            # e.g. {{ 1 / 0 }} or the sandbox's "Range too big": a broken template, not a crash
            raise TemplateError(
                f"chat template {self.name!r} failed to render: {type(exc).__name__}: {exc}"
            ) from exc


BUILTIN_TEMPLATES = ("auto", "chatml", "vicuna_v1.1")


def builtin_template(name: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    if name == "vicuna_v1.1":
        return ChatTemplate(
            name="vicuna_v1.1",
            source=VICUNA_V1_1,
            bos_token=bos_token or "<s>",
            eos_token=eos_token or "</s>",
            stop=("USER:",),
            variables={"default_system": VICUNA_SYSTEM},
        )
    if name == "chatml":
        return ChatTemplate(
            name="chatml",
            source=CHATML,
            bos_token=bos_token,
            eos_token=eos_token or "<|im_end|>",
            stop=("<|im_end|>",),
        )
    raise TemplateError(
        f"unknown chat template {name!r}; choose one of {', '.join(BUILTIN_TEMPLATES)} or a .jinja file"
    )


def resolve_template(
    choice: str,
    *,
    embedded_source: str | None,
    model_name: str,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatTemplate:
    """Pick the template for a model.

    ``choice`` is "auto" (the model's own template; a Vicuna model without one gets vicuna_v1.1),
    a built-in name, or the path of a Jinja file.
    """
    if choice == "auto":
        if embedded_source:
            return ChatTemplate(
                name="model", source=embedded_source, bos_token=bos_token, eos_token=eos_token
            )
        if "vicuna" in model_name.lower():
            return builtin_template("vicuna_v1.1", bos_token=bos_token, eos_token=eos_token)
        raise TemplateError(
            f"{model_name} has no chat template in its metadata, and a wrong template silently gives "
            "bad answers. Pass --chat-template vicuna_v1.1 or chatml, or the path of a .jinja file."
        )
    if choice in BUILTIN_TEMPLATES:
        return builtin_template(choice, bos_token=bos_token, eos_token=eos_token)
    path = Path(choice)
    if path.suffix in {".jinja", ".j2", ".txt"} or path.exists():
        if not path.is_file():
            raise TemplateError(f"chat template file {path} does not exist")
        source = path.read_text(encoding="utf-8")
        try:
            _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template file {path} is not valid Jinja: {exc}") from exc
        return ChatTemplate(name=path.name, source=source, bos_token=bos_token, eos_token=eos_token)
    raise TemplateError(
        f"unknown chat template {choice!r}; choose auto, chatml, vicuna_v1.1 or the path of a .jinja file"
    )
