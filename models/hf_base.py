"""Loading a Hugging Face checkpoint for the transformers backend: fp32/bf16/fp16, GPTQ 4-bit through
GPTQModel's kernels (a CPU or a GPU; ``models/gptq.py`` makes such checkpoints), bitsandbytes NF4 (CUDA),
or a GGUF file dequantized once into a plain checkpoint (``ensure_hf_base``, which the trainers use too);
plus the PEFT adapters loaded on top of it.

One loaded base (:class:`HFBase`) serves several versions: each adapter is loaded under its own name and
each generation names the adapter it uses (PEFT's mixed-adapter inference), so versions never flip a
shared "active adapter". PEFT's LoRA layer for GPTQ weights has no mixed-adapter batches: a GPTQ base
has one generation slot and switches the active adapter inside it. Generations hold one of a few slots
(default one: on CPU two torch generations on the same cores are slower than one after the other);
loading or deleting an adapter takes every slot.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.base import ModelLoadError

log = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes; ``size`` and ``mtime_ns`` are in the key so that a rewritten file is
    read again (a 100 MB GGUF takes 0.2 s, a 4 GB one a few seconds, once per process)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_key(path: str | Path) -> str:
    """What names a model file's or checkpoint directory's weights: a hash of the contents (and of a
    directory's file names), not of where they are or when they were copied. A model installed again (a
    fresh clone's virtual environment, a copy in another folder) keeps its key, and so reuses what was
    cached for it (its dequantized copy, its GPTQ copy, the base's replay answers); a changed file gets
    a new one."""

    def digest(p: Path) -> str:
        st = p.stat()
        return _file_digest(str(p.resolve()), st.st_size, st.st_mtime_ns)

    path = Path(path)
    if not path.is_dir():
        return digest(path)[:12]
    files = sorted(p for p in path.iterdir() if p.is_file())
    return hashlib.sha256("|".join(f"{p.name}:{digest(p)}" for p in files).encode()).hexdigest()[:12]


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
    target = cache_dir / f"{gguf_path.stem}-{weights_key(gguf_path)}"
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
        self.gptq = gptq
        if gptq:
            if max_concurrency > 1:
                log.info("a GPTQ base generates one reply at a time (PEFT has no mixed-adapter GPTQ batches)")
                max_concurrency = 1
            kwargs.update(self._gptq_kwargs(gptq, self.path, self.device, dtype))
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
        if display_name is None and gptq:
            # the model line says what is served: "GPTQ 4-bit" and the kernel's device; a copy made by
            # models/gptq.py is named after its source (the directory name carries a cache key)
            from models.gptq import source_record

            made = source_record(self.path) or {}
            name = made.get("model_id") or self.path.name
            display_name = f"{name} (GPTQ {gptq.get('bits', 4)}-bit, transformers, {self.device})"
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
    def _gptq_kwargs(gptq: dict[str, Any], path: Path, device: str, dtype: str) -> dict[str, Any]:
        """transformers' GPTQ integration builds GPTQModel's kernel for ``device``: ATen int4 on a CPU,
        Marlin/Triton on a GPU."""
        import torch
        from transformers import GPTQConfig

        from models.gptq import QuantizationError, check_group_size, require_gptqmodel

        if device == "cpu":
            try:  # a group size the CPU kernel cannot use fails only at the first token: say so now
                check_group_size(
                    json.loads((path / "config.json").read_text()),
                    int(gptq.get("group_size", 128)),
                    model_name=path.name,
                )
            except QuantizationError as exc:
                raise ModelLoadError(f"{path} cannot be served on the CPU: {exc}") from exc
        require_gptqmodel()
        if device == "cpu":
            # The int4 kernel computes in bfloat16 whatever the model's dtype; "auto" keeps the rest of the
            # model (norms, attention, embeddings) in float32, which measured faster on CPU than bfloat16.
            kwargs: dict[str, Any] = {
                "device_map": {"": "cpu"},
                "dtype": torch.float32 if dtype == "auto" else _torch_dtype(dtype, device),
            }
        else:  # GPTQModel's GPU kernels are written for float16 first
            kwargs = {
                "device_map": {"": device},
                "dtype": torch.float16 if dtype == "auto" else _torch_dtype(dtype, device),
            }
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

    @contextlib.contextmanager
    def selecting(self, adapter: str | None) -> Iterator[dict[str, Any]]:
        """``generate`` keyword arguments that make one generation use ``adapter`` (None: the base alone).
        Call it while holding a generation slot."""
        if self._peft is None:
            yield {}
        elif not self.gptq:
            yield {"adapter_names": [adapter or BASE_ADAPTER]}
        elif adapter is None:
            # GPTQ: no mixed-adapter batches (see the module docstring); one slot, so switching is safe
            with self._peft.disable_adapter():
                yield {}
        else:
            self._peft.set_adapter(adapter)
            yield {}

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
