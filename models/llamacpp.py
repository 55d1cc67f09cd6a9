"""llama.cpp backend (llama-cpp-python) for GGUF files: the embedded default and any Vicuna-class GGUF.

A llama.cpp context is not thread-safe, so the model keeps a small pool of ``Llama`` instances (the
weights are memory-mapped, so instances share them; each has its own KV cache). A generation checks
one out for its whole duration; extra requests wait in line.

This CPU (AMX) crashes llama.cpp's AMX extra buffer type on the first decode (llama.cpp #20824):
``extra_buffers="auto"`` turns extra buffer types off when the CPU has AMX and the build reports AMX.
Our own setup builds llama.cpp without native flags (no AMX kernels at all), so "auto" is a guard for
users who built it themselves.

``SamplingParams.json_schema`` is enforced with a llama.cpp grammar (models/grammar.py). ``n_gpu_layers``
on a build without a GPU backend offloads nothing; the model says so in the log and in
``load_warnings`` (for the server to print at start) instead of quietly running on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

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
from models.grammar import schema_to_gbnf
from models.inflight import CountedGenerations
from models.templates import ChatTemplate, TemplateError, resolve_template

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_PARAMS_PATCH_LOCK = threading.Lock()
LLAMA_CPP_VERSION = "0.3.36"
# --no-cache-dir: pip would reuse the CPU wheel it cached, whatever CMAKE_ARGS say; --no-deps: the
# dependencies are installed already, and --force-reinstall would otherwise upgrade them all.
CUDA_REBUILD = (
    f'CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF" pip install --force-reinstall --no-deps --no-cache-dir '
    f"llama-cpp-python=={LLAMA_CPP_VERSION}"
)


def gpu_offload_warning(n_gpu_layers: int) -> str | None:
    """Why ``n_gpu_layers`` will offload nothing (None when it will, or when none were asked for)."""
    if n_gpu_layers == 0:
        return None
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        return None
    asked = "all layers" if n_gpu_layers < 0 else f"{n_gpu_layers} layers"
    return (
        f"--gpu-layers {n_gpu_layers} asks for {asked} on a GPU, but this llama.cpp build has no GPU "
        "backend (or found no GPU): nothing will be offloaded and the model runs on the CPU. To use an "
        "NVIDIA GPU, rebuild llama-cpp-python with CUDA (it needs nvcc on PATH and the NVIDIA driver): "
        f"{CUDA_REBUILD}"
    )


def check_gguf_file(path: Path) -> None:
    """Raise ModelLoadError with advice unless ``path`` is a readable GGUF file."""
    if not path.exists():
        raise ModelLoadError(f"Model file {path} does not exist. Check the --model path.")
    if not path.is_file():
        raise ModelLoadError(f"{path} is a directory, not a GGUF file.")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes). "
            "Convert it with llama.cpp's convert_hf_to_gguf.py, or pass a Hugging Face directory instead."
        )


def cpu_has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def build_has_amx() -> bool:
    import llama_cpp

    return "AMX" in llama_cpp.llama_print_system_info().decode(errors="replace")


@contextlib.contextmanager
def model_params_without_extra_buffers() -> Iterator[None]:
    """llama-cpp-python exposes no kwarg for ``use_extra_bufts``: wrap the defaults while loading."""
    import llama_cpp.llama_cpp as lib

    with _PARAMS_PATCH_LOCK:
        original = lib.llama_model_default_params

        def patched():
            params = original()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = patched
        try:
            yield
        finally:
            lib.llama_model_default_params = original


def _attach_lora(llm, path: str, scale: float) -> None:
    """Load a GGUF LoRA adapter onto a loaded ``Llama`` and activate it on its context.

    Not ``Llama(lora_path=...)``: llama-cpp-python 0.3.36 then turns memory-mapping off (every version
    would hold a full private copy of the weights) and misses a failed load (it compares the returned
    pointer with None, while ctypes returns a NULL pointer object), after which the first decode
    crashes the process. Here a corrupt adapter is a ModelLoadError and the weights stay shared.
    """
    import ctypes

    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
    if not adapter:  # NULL pointer: not a LoRA for this model, or a damaged file
        raise ModelLoadError(
            f"llama.cpp could not load the LoRA adapter {path}: not a GGUF LoRA for this base model, or damaged"
        )
    llm._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)  # freed before the context and model
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(scale)
    if llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, scales):
        raise ModelLoadError(f"llama.cpp could not activate the LoRA adapter {path}")


class LlamaCppChatModel(CountedGenerations, BaseChatModel):
    """A GGUF model served by llama.cpp with a pool of contexts."""

    def __init__(
        self,
        path: str | Path,
        *,
        chat_template: str = "auto",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        pool_size: int = 2,
        n_gpu_layers: int = 0,
        lora_path: str | Path | None = None,
        lora_scale: float = 1.0,
        extra_buffers: str = "auto",
        display_name: str | None = None,
    ):
        # The settings a clone() keeps: every argument but the file, the adapter and the name.
        self._init_args = {
            name: value
            for name, value in locals().items()
            if name not in ("self", "path", "lora_path", "display_name")
        }
        self.path = Path(path)
        check_gguf_file(self.path)
        if lora_path is not None:
            check_gguf_file(Path(lora_path))
        if pool_size < 1:
            raise ModelLoadError("pool size (--concurrency) must be at least 1")
        self.model_id = self.path.name
        self.display_name = display_name or self.path.stem
        self.lora_path = str(lora_path) if lora_path else None
        warning = gpu_offload_warning(n_gpu_layers)
        self.load_warnings: tuple[str, ...] = (warning,) if warning else ()
        if warning:
            log.warning("%s", warning)
        # Threads x instances must not exceed the cores: llama.cpp's OpenMP threads spin while waiting, and
        # two spinning teams on the same cores collapse throughput. Measured with 2 cores:
        # 1 thread 85 tok/s, 2 threads 114 tok/s alone, but 2+2 threads under load far worse than 1+1.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) // pool_size)
        self.pool_size = pool_size
        if extra_buffers not in ("auto", "on", "off"):
            raise ModelLoadError("extra_buffers must be auto, on or off")
        disable_extra = extra_buffers == "off" or (
            extra_buffers == "auto" and cpu_has_amx() and build_has_amx()
        )
        kwargs = dict(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_gpu_layers=n_gpu_layers,
            verbose=False,
        )
        self._instances = []
        try:
            for _ in range(pool_size):
                llm = self._load(kwargs, disable_extra)
                self._instances.append(llm)
                if self.lora_path:
                    _attach_lora(llm, self.lora_path, lora_scale)
        except ModelLoadError:
            self.close()
            raise
        first = self._instances[0]
        self.context_length = first.n_ctx()
        self.metadata = dict(first.metadata)
        bos = first._model.token_get_text(first.token_bos()) if first.token_bos() >= 0 else ""
        eos = first._model.token_get_text(first.token_eos()) if first.token_eos() >= 0 else ""
        self._add_bos = first._model.add_bos_token()
        self._bos_text = bos
        try:
            self.template: ChatTemplate = resolve_template(
                chat_template,
                embedded_source=self.metadata.get("tokenizer.chat_template"),
                model_name=self.path.name,
                bos_token=bos,
                eos_token=eos,
            )
        except TemplateError as exc:
            self.close()
            raise ModelLoadError(str(exc)) from exc
        self._tokenizer = first  # tokenization only reads the vocabulary: safe beside a running decode
        self._pool: queue.Queue = queue.Queue()
        for inst in self._instances:
            self._pool.put(inst)
        self._init_count()
        self._checked_grammars: set[str] = set()  # grammars llama.cpp parsed once already

    def clone(
        self, *, lora_path: str | Path | None = None, display_name: str | None = None
    ) -> LlamaCppChatModel:
        """A new pool on the same GGUF with the same settings, optionally with a GGUF LoRA adapter.

        The weights are memory-mapped, so a clone costs its KV caches and the adapter, not a second model.
        """
        return LlamaCppChatModel(self.path, lora_path=lora_path, display_name=display_name, **self._init_args)

    @staticmethod
    def _load(kwargs: dict, disable_extra_buffers: bool):
        from llama_cpp import Llama

        try:
            if disable_extra_buffers:
                with model_params_without_extra_buffers():
                    return Llama(**kwargs)
            return Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {kwargs['model_path']}: {exc}. "
                "Is the file complete and a model (not an adapter)?"
            ) from exc

    # -- prompt --------------------------------------------------------------------------------------
    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        return self.template.render(messages)

    def _tokenize_prompt(self, prompt: str) -> list[int]:
        if not self._instances:  # freed by close(): touching the vocabulary now would crash the process
            raise GenerationError("this model was unloaded; the server swapped to another version")
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return self._tokenizer.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize_prompt(text))

    def _grammar(self, params: SamplingParams):
        """The LlamaGrammar of ``params.json_schema`` (None without one); raises UnsupportedParameter."""
        if params.json_schema is None:
            return None
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        gbnf = schema_to_gbnf(params.json_schema)
        if gbnf not in self._checked_grammars:
            # llama-cpp-python adds the grammar sampler without checking it: a grammar llama.cpp cannot
            # parse would be a NULL sampler in the chain and crash the decode. Parse it once here.
            sampler = llama_cpp.llama_sampler_init_grammar(
                self._tokenizer._model.vocab, gbnf.encode("utf-8"), b"root"
            )
            if not sampler:
                raise UnsupportedParameter("json_schema", "llama.cpp cannot parse the grammar of this schema")
            llama_cpp.llama_sampler_free(sampler)
            self._checked_grammars.add(gbnf)
        return LlamaGrammar.from_string(gbnf, verbose=False)

    # -- generation ----------------------------------------------------------------------------------
    def stream(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        t_request = time.perf_counter()
        params = params.with_seed()
        # counted in from here, so close() never frees the tokenizer under us
        with self._start(messages, params) as fitted:
            tokens = self._tokenize_prompt(fitted.prompt)
            grammar = self._grammar(params)
        stop = list(dict.fromkeys(self.template.stop + params.stop))

        def run(emit: Callable[[str], None], cancel: threading.Event) -> GenerationResult:
            llm = self._checkout(cancel)
            t_start = time.perf_counter()
            pieces: list[str] = []
            t_first = None
            finish = "stop"
            try:
                if llm is None:  # cancelled while waiting for an instance
                    finish = "cancelled"
                else:
                    completion = llm.create_completion(
                        prompt=tokens,
                        max_tokens=fitted.max_new_tokens,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        top_k=params.top_k,
                        min_p=0.0,
                        repeat_penalty=params.repetition_penalty,
                        seed=params.seed,
                        stop=stop or None,
                        stream=True,
                        grammar=grammar,
                    )
                    try:
                        for chunk in completion:
                            if cancel.is_set():
                                finish = "cancelled"
                                break
                            choice = chunk["choices"][0]
                            if choice["text"]:
                                if t_first is None:
                                    t_first = time.perf_counter()
                                pieces.append(choice["text"])
                                emit(choice["text"])
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                    finally:
                        completion.close()
            except Exception as exc:
                raise GenerationError(f"llama.cpp generation failed: {exc}") from exc
            finally:
                if llm is not None:
                    self._pool.put(llm)
            text = "".join(pieces)
            n_out = (
                len(self._tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=True))
                if text
                else 0
            )
            return GenerationResult.timed(
                text,
                fitted,
                params,
                len(tokens),
                n_out,
                finish,
                t_request,
                t_start,
                t_first,
                self.display_name,
            )

        def produce(emit: Callable[[str], None], cancel: threading.Event) -> GenerationResult:
            try:
                return run(emit, cancel)
            finally:
                self._release()

        return Generation(produce, name=f"llamacpp-{self.display_name}")

    def _checkout(self, cancel: threading.Event):
        while True:
            try:
                return self._pool.get(timeout=0.1)
            except queue.Empty:
                if cancel.is_set():
                    return None

    def close(self, timeout: float | None = 600.0) -> None:
        """Refuse new generations, let those in flight finish, then free every instance."""
        if getattr(self, "_idle", None) is not None and not self._close_when_idle(timeout):
            return  # leaking the instances is better than freeing them under a running decode
        for inst in getattr(self, "_instances", []):
            with contextlib.suppress(Exception):
                inst.close()
        self._instances = []
