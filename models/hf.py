"""transformers backend: a local Hugging Face checkpoint (fp32/bf16/fp16, GPTQ 4-bit through GPTQModel,
bitsandbytes NF4) or a GGUF file dequantized by transformers, with PEFT LoRA adapters on top.

One loaded base (:class:`HFBase`) serves several versions: :meth:`HFChatModel.with_adapter` loads a PEFT
adapter under its own name and returns a view that generates with it; each generation names its adapter
(PEFT's mixed-adapter inference), so versions never flip a shared "active adapter". Generations run
under a small semaphore (default one at a time: on CPU two torch generations on the same cores are
slower than one after the other); loading or deleting an adapter takes every slot.

``ensure_hf_base`` turns a GGUF file into a plain HF checkpoint once (dequantizing takes ~15-25 s here;
the saved copy reloads in ~0.2 s): the trainers load their base model through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
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
)
from models.context import fit_to_context
from models.templates import ChatTemplate, TemplateError, resolve_template

log = logging.getLogger(__name__)

GPTQ_NEEDS_GPU = "GPTQ checkpoints need a CUDA GPU and `pip install .[gpu]`"
NF4_NEEDS_GPU = "bitsandbytes 4-bit (NF4) needs a CUDA GPU and `pip install .[gpu]`"
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in mixed-adapter inference
DTYPES = ("auto", "float32", "bfloat16", "float16")


# -- checkpoints -----------------------------------------------------------------------------------
def is_hf_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def gptq_config_of(path: Path) -> dict[str, Any] | None:
    """The GPTQ quantization settings of a checkpoint directory, or None if it is not GPTQ.

    Newer checkpoints carry ``quantization_config`` (quant_method "gptq") in config.json; older
    AutoGPTQ ones (e.g. most Vicuna GPTQ uploads) only have ``quantize_config.json``.
    """
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    qc = config.get("quantization_config")
    if isinstance(qc, dict) and str(qc.get("quant_method", "")).lower() == "gptq":
        return qc
    legacy = path / "quantize_config.json"
    if legacy.is_file():
        try:
            return {"quant_method": "gptq", **json.loads(legacy.read_text()), "legacy_file": legacy.name}
        except ValueError as exc:
            raise ModelLoadError(f"{legacy} is not valid JSON: {exc}") from exc
    return None


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def ensure_hf_base(gguf_path: str | Path, cache_dir: str | Path) -> Path:
    """A plain HF checkpoint of ``gguf_path`` (dequantized to fp32), made once and cached in ``cache_dir``.

    transformers refuses to save a model it dequantized from GGUF ("not serializable"); dropping the
    quantizer and its config first gives an ordinary checkpoint with identical outputs. The copy is
    written to a temporary directory and renamed, so a crash never leaves a half-written base behind.
    """
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ModelLoadError(f"{gguf_path} does not exist")
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    if (target / "gguf_source.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:  # transformers raises many types for unsupported GGUF architectures
        raise ModelLoadError(f"transformers could not dequantize {gguf_path}: {exc}") from exc
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    tmp = cache_dir / f".tmp-{target.name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "gguf_source.json").write_text(
            json.dumps({"gguf": str(gguf_path), "model_id": gguf_path.name, "dtype": str(model.dtype)})
        )
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / "gguf_source.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("dequantized %s to %s in %.1f s", gguf_path.name, target, time.perf_counter() - t0)
    return target


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


class HFBase:
    """A loaded transformers model + tokenizer, shared by the versions (adapter views) served from it."""

    def __init__(
        self,
        path: str | Path,
        *,
        dtype: str = "auto",
        quantization: str | None = None,
        device: str = "auto",
        max_concurrency: int = 1,
        n_threads: int | None = None,
        model_id: str | None = None,
        display_name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        if not is_hf_checkpoint(self.path):
            raise ModelLoadError(
                f"{self.path} is not a Hugging Face checkpoint directory (no config.json). "
                "Pass a directory with config.json and weights, or a .gguf file."
            )
        if quantization not in (None, "nf4"):
            raise ModelLoadError(f"quantization must be None or 'nf4', got {quantization!r}")
        if max_concurrency < 1:
            raise ModelLoadError("max_concurrency must be at least 1")
        cuda = torch.cuda.is_available()
        self.device = ("cuda" if cuda else "cpu") if device == "auto" else device
        if n_threads:
            torch.set_num_threads(n_threads)  # process-wide: only the serving process calls this
        kwargs: dict[str, Any] = {}
        gptq = gptq_config_of(self.path)
        self.quantization = "gptq" if gptq else quantization
        if gptq:
            kwargs.update(self._gptq_kwargs(gptq, cuda))
        elif quantization == "nf4":
            kwargs.update(self._nf4_kwargs(cuda))
        else:
            kwargs["dtype"] = _torch_dtype(dtype, self.device)
            if self.device != "cpu":
                kwargs["device_map"] = {"": self.device}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"transformers could not load {self.path}: {exc}") from exc
        self.model.eval()
        source = self.path / "gguf_source.json"
        self.gguf_source: dict[str, Any] | None = json.loads(source.read_text()) if source.is_file() else None
        # A base dequantized from a GGUF keeps the GGUF's name as its identity, so versions (adapters)
        # registered against it apply whether llama.cpp or transformers serves it.
        self.model_id = model_id or (self.gguf_source or {}).get("model_id") or self.path.name
        gguf_name = (self.gguf_source or {}).get("model_id")
        self.display_name = display_name or (
            f"{Path(gguf_name).stem} (transformers)" if gguf_name else self.path.name
        )
        self.max_concurrency = max_concurrency
        self._slots = threading.Semaphore(max_concurrency)
        self._exclusive = threading.Lock()
        self._adapters: dict[str, str] = {}  # adapter name -> directory
        self._peft = None  # the PeftModel wrapping self.model once an adapter is loaded
        self.closed = False

    @staticmethod
    def _gptq_kwargs(gptq: dict[str, Any], cuda: bool) -> dict[str, Any]:
        import importlib.util

        if not cuda:
            raise ModelLoadError(f"{GPTQ_NEEDS_GPU} (no CUDA device is visible).")
        missing = [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]
        if missing:
            raise ModelLoadError(f"{GPTQ_NEEDS_GPU} ({', '.join(missing)} not installed).")
        import torch
        from transformers import GPTQConfig

        kwargs: dict[str, Any] = {"device_map": {"": "cuda"}, "dtype": torch.float16}
        # transformers reads quantization_config from config.json itself (with every field GPTQModel
        # wrote); old AutoGPTQ checkpoints only have quantize_config.json, so build the config from it.
        if gptq.get("legacy_file"):
            kwargs["quantization_config"] = GPTQConfig(
                bits=int(gptq.get("bits", 4)),
                group_size=int(gptq.get("group_size", 128)),
                desc_act=bool(gptq.get("desc_act", False)),
                sym=bool(gptq.get("sym", True)),
            )
        return kwargs

    @staticmethod
    def _nf4_kwargs(cuda: bool) -> dict[str, Any]:
        import importlib.util

        if not cuda:
            raise ModelLoadError(f"{NF4_NEEDS_GPU} (no CUDA device is visible).")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError(f"{NF4_NEEDS_GPU} (bitsandbytes not installed).")
        import torch
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {
            "device_map": {"": "cuda"},
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=compute,
                bnb_4bit_use_double_quant=True,
            ),
        }

    # -- adapters ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self):
        """Every generation slot: nothing generates while adapters are added or removed."""
        with self._exclusive:
            for _ in range(self.max_concurrency):
                self._slots.acquire()
            try:
                yield
            finally:
                for _ in range(self.max_concurrency):
                    self._slots.release()

    def load_adapter(self, adapter_dir: str | Path, name: str) -> None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelLoadError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
        from peft import PeftModel

        with self.exclusive():
            if name in self._adapters:
                return
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self.model, str(adapter_dir), adapter_name=name, is_trainable=False
                    )
                else:
                    self._peft.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
            except Exception as exc:  # safetensors / size-mismatch / JSON errors all mean "bad adapter"
                if self._peft is not None and name in getattr(self._peft, "peft_config", {}):
                    with contextlib.suppress(Exception):
                        self._peft.delete_adapter(name)
                raise ModelLoadError(
                    f"cannot load the PEFT adapter {adapter_dir} on {self.display_name}: {exc}"
                ) from exc
            self._peft.eval()
            self._adapters[name] = str(adapter_dir)

    def unload_adapter(self, name: str) -> None:
        with self.exclusive():
            if name not in self._adapters or self._peft is None:
                return
            if len(self._adapters) > 1:
                self._peft.delete_adapter(name)
            else:
                # A PeftModel without adapters fails to generate: unwrap back to the bare base instead.
                self.model = self._peft.unload()
                self._peft = None
            del self._adapters[name]

    @property
    def adapters(self) -> dict[str, str]:
        return dict(self._adapters)

    def generator(self):
        return self._peft if self._peft is not None else self.model

    def close(self) -> None:
        self.closed = True
        with self.exclusive():
            self._peft = None
            self.model = None
        with contextlib.suppress(Exception):
            import gc

            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


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


class HFChatModel(BaseChatModel):
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
        self._active = 0
        self._idle = threading.Condition()
        self._closed = False
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
        params = params.with_seed()
        with self._idle:
            if self._closed or self.base.closed:
                raise GenerationError("this model was unloaded; the server swapped to another version")
            self._active += 1
        try:
            fitted = fit_to_context(
                messages,
                render=self.render_prompt,
                count_tokens=self.count_tokens,
                context_length=self.context_length,
                max_new_tokens=params.max_new_tokens,
            )
            input_ids = self._encode(fitted.prompt)
        except BaseException:
            self._release()
            raise
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
            if base._peft is not None:
                gen_kwargs["adapter_names"] = [self.adapter or BASE_ADAPTER]
            with torch.inference_mode():
                out = model.generate(**gen_kwargs)
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
        t_end = time.perf_counter()
        t_first = scanner.first_at
        decode_s = (t_end - t_first) if t_first is not None else 0.0
        return GenerationResult(
            text="".join(scanner.pieces),
            prompt=fitted.prompt,
            prompt_tokens=len(input_ids),
            completion_tokens=n_out,
            finish_reason=finish,
            params=params,
            ttft_s=None if t_first is None else t_first - t_request,
            total_s=t_end - t_request,
            tokens_per_s=(n_out - 1) / decode_s if n_out > 1 and decode_s > 0 else None,
            queue_s=t_start - t_request,
            notices=list(fitted.notices),
            model_name=self.display_name,
        )

    def _release(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    @property
    def active_generations(self) -> int:
        return self._active

    def close(self, timeout: float | None = 600.0) -> None:
        """Refuse new generations, wait for running ones, then drop this view's adapter (or the base)."""
        with self._idle:
            self._closed = True
            if not self._idle.wait_for(lambda: self._active == 0, timeout=timeout):
                log.warning("closing %s with %d generations running", self.display_name, self._active)
                return
        if self.adapter is not None:
            self.base.unload_adapter(self.adapter)
        elif self._owns_base:
            self.base.close()
