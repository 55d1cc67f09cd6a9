"""transformers backend: a version served from a loaded :class:`~models.hf_base.HFBase` (the base alone
or the base + one PEFT adapter), streamed through transformers' ``TextStreamer`` with our stop strings,
cancellation and timings. Loading lives in ``models/hf_base.py``; its public names are re-exported here.

Output constraints (``SamplingParams.json_schema``) are not implemented here: such a request raises
``UnsupportedParameter`` before anything runs, rather than returning text that ignores the schema.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.base import (
    BaseChatModel,
    ChatMessage,
    Generation,
    GenerationError,
    GenerationResult,
    ModelLoadError,
    SamplingParams,
    UnsupportedParameter,
)
from models.hf_base import (  # noqa: F401 (re-exported: models.hf is the backend's public module)
    BASE_ADAPTER,
    DTYPES,
    NF4_NEEDS_GPU,
    HFBase,
    ensure_hf_base,
    gptq_config_of,
    is_hf_checkpoint,
)
from models.inflight import CountedGenerations
from models.templates import ChatTemplate, TemplateError, resolve_template

log = logging.getLogger(__name__)


def _eos_ids(base: HFBase, template: ChatTemplate) -> list[int]:
    ids: list[int] = []
    for source in (base.model.generation_config.eos_token_id, base.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif isinstance(source, (list, tuple)):
            ids.extend(int(x) for x in source)
    for text in (template.eos_token, *template.stop):
        tok = base.tokenizer.convert_tokens_to_ids(text) if text else None
        if isinstance(tok, int) and tok != base.tokenizer.unk_token_id:
            ids.append(tok)
    return list(dict.fromkeys(ids))


class _StopScanner:
    """Incremental text with stop strings cut out: holds back a tail that could start a stop string."""

    def __init__(self, stops: Sequence[str], emit: Callable[[str], None]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.emit = emit
        self.pending = ""
        self.pieces: list[str] = []
        self.stopped = False
        self.first_at: float | None = None

    def _out(self, text: str) -> None:
        if text:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            self.pieces.append(text)
            self.emit(text)

    def feed(self, text: str, end: bool = False) -> None:
        if self.stopped:
            return
        buf = self.pending + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._out(buf[: min(hits)])
            self.pending = ""
            self.stopped = True
            return
        cut = len(buf) if end else max(0, len(buf) - self.hold)
        self._out(buf[:cut])
        self.pending = buf[cut:]


class HFChatModel(CountedGenerations, BaseChatModel):
    """A version served by transformers: the base alone or the base with one PEFT adapter."""

    def __init__(
        self,
        base: HFBase,
        *,
        adapter: str | None = None,
        chat_template: str = "auto",
        n_ctx: int | None = None,
        display_name: str | None = None,
    ):
        self.base = base
        self.adapter = adapter
        self.model_id = base.model_id
        self.display_name = display_name or base.display_name + (f" + {adapter}" if adapter else "")
        tok = base.tokenizer
        try:
            self.template = resolve_template(
                chat_template,
                embedded_source=getattr(tok, "chat_template", None),
                model_name=base.model_id,
                bos_token=tok.bos_token or "",
                eos_token=tok.eos_token or "",
            )
        except TemplateError as exc:
            raise ModelLoadError(str(exc)) from exc
        limit = getattr(base.model.config, "max_position_embeddings", None) or 4096
        self.context_length = min(limit, n_ctx) if n_ctx else limit
        self._chat_template = chat_template
        self._n_ctx = n_ctx
        self._eos = _eos_ids(base, self.template)
        self._init_count()
        self._owns_base = adapter is None

    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        cache_dir: str | Path | None = None,
        chat_template: str = "auto",
        n_ctx: int | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        max_concurrency: int = 1,
        n_threads: int | None = None,
    ) -> HFChatModel:
        """Load a checkpoint directory, or a GGUF file (dequantized once into ``cache_dir``)."""
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            if cache_dir is None:
                raise ModelLoadError("serving a GGUF file with transformers needs a cache directory")
            path = ensure_hf_base(path, cache_dir)
        base = HFBase(
            path,
            dtype=dtype,
            quantization=quantization,
            max_concurrency=max_concurrency,
            n_threads=n_threads,
        )
        return cls(base, chat_template=chat_template, n_ctx=n_ctx)

    def with_adapter(self, adapter_dir: str | Path | None, name: str | None = None) -> HFChatModel:
        """A view of the same base that generates with ``adapter_dir`` (None: the base alone)."""
        if adapter_dir is not None:
            name = name or Path(adapter_dir).name
            self.base.load_adapter(adapter_dir, name)
        view = HFChatModel(
            self.base,
            adapter=name if adapter_dir is not None else None,
            chat_template=self._chat_template,
            n_ctx=self._n_ctx,
        )
        view._owns_base = False
        return view

    # -- prompt --------------------------------------------------------------------------------------
    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        return self.template.render(messages)

    def _encode(self, prompt: str) -> list[int]:
        tok = self.base.tokenizer
        add_special = not (tok.bos_token and prompt.startswith(tok.bos_token))
        return tok(prompt, add_special_tokens=add_special)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    # -- generation ----------------------------------------------------------------------------------
    def stream(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        t_request = time.perf_counter()
        if params.json_schema is not None:
            raise UnsupportedParameter(
                "json_schema",
                "the transformers backend cannot constrain replies to a JSON schema (JSON mode, structured "
                "outputs, tool calls); serve a GGUF through llama.cpp (--backend llamacpp) for that",
            )
        params = params.with_seed()
        with self._start(messages, params) as fitted:
            input_ids = self._encode(fitted.prompt)
        stops = list(dict.fromkeys(self.template.stop + params.stop))

        def produce(emit: Callable[[str], None], cancel: threading.Event) -> GenerationResult:
            try:
                return self._run(input_ids, fitted, params, stops, emit, cancel, t_request)
            finally:
                self._release()

        return Generation(produce, name=f"hf-{self.display_name}")

    def _run(self, input_ids, fitted, params, stops, emit, cancel, t_request) -> GenerationResult:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        base = self.base
        scanner = _StopScanner(stops, emit)

        class Streamer(TextStreamer):  # transformers' word-boundary-safe incremental decoding
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                scanner.feed(text, end=stream_end)

        class Stop(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                flag = cancel.is_set() or scanner.stopped
                return torch.full((ids.shape[0],), flag, dtype=torch.bool, device=ids.device)

        while not base._slots.acquire(timeout=0.1):
            if cancel.is_set():
                return self._result(scanner, fitted, params, input_ids, 0, "cancelled", t_request, t_request)
        t_start = time.perf_counter()
        try:
            model = base.generator()
            if model is None:
                raise GenerationError("the model was unloaded")
            gen_kwargs: dict[str, Any] = dict(
                input_ids=torch.tensor([input_ids], device=model.device),
                attention_mask=torch.ones((1, len(input_ids)), dtype=torch.long, device=model.device),
                max_new_tokens=fitted.max_new_tokens,
                do_sample=not params.greedy,
                repetition_penalty=params.repetition_penalty,
                eos_token_id=self._eos or None,
                pad_token_id=base.tokenizer.pad_token_id or (self._eos[0] if self._eos else None),
                streamer=Streamer(base.tokenizer, skip_prompt=True, skip_special_tokens=True),
                stopping_criteria=StoppingCriteriaList([Stop()]),
            )
            if not params.greedy:
                gen_kwargs.update(
                    temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
                )
                torch.manual_seed(params.seed)  # under the slot: with one slot, seeds reproduce exactly
            else:
                gen_kwargs.update(temperature=None, top_p=None, top_k=None)
            with base.selecting(self.adapter) as adapter_kwargs, torch.inference_mode():
                out = model.generate(**gen_kwargs, **adapter_kwargs)
        except GenerationError:
            raise
        except Exception as exc:
            raise GenerationError(f"transformers generation failed: {exc}") from exc
        finally:
            base._slots.release()
        new = out[0, len(input_ids) :].tolist()
        ended_on_eos = bool(new) and new[-1] in self._eos
        n_out = len(new) - (1 if ended_on_eos else 0)
        if cancel.is_set():
            finish = "cancelled"
        elif scanner.stopped or ended_on_eos:
            finish = "stop"
        else:
            finish = "length" if len(new) >= fitted.max_new_tokens else "stop"
        return self._result(scanner, fitted, params, input_ids, n_out, finish, t_request, t_start)

    def _result(
        self, scanner, fitted, params, input_ids, n_out, finish, t_request, t_start
    ) -> GenerationResult:
        text = "".join(scanner.pieces)
        return GenerationResult.timed(
            text,
            fitted,
            params,
            len(input_ids),
            n_out,
            finish,
            t_request,
            t_start,
            scanner.first_at,
            self.display_name,
        )

    def _refuses(self) -> bool:
        return self._closed or self.base.closed

    def close(self, timeout: float | None = 600.0) -> None:
        """Refuse new generations, wait for running ones, then drop this view's adapter (or the base)."""
        if not self._close_when_idle(timeout):
            return
        if self.adapter is not None:
            self.base.unload_adapter(self.adapter)
        elif self._owns_base:
            self.base.close()
