"""Choose and load a backend for ``--model``.

- nothing: the embedded SmolLM2-135M Q4_1 GGUF through llama.cpp (or ``--backend hf``: dequantized);
- a ``.gguf`` file: llama.cpp (``--gpu-layers`` offloads layers to a GPU);
- a directory with a GPTQ config (``quantization_config`` in config.json or ``quantize_config.json``):
  transformers + GPTQModel's kernels, on the CPU or a GPU (``launch.py quantize`` makes one);
- any other Hugging Face checkpoint directory: transformers (``--quantization nf4`` on a GPU);
- an ``http(s)://`` URL: an OpenAI-compatible server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.base import ChatModel, ModelLoadError
from models.embedded import embedded_model_path

BACKENDS = ("auto", "llamacpp", "hf", "openai_compat")


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "llamacpp" | "hf" | "openai_compat"
    target: str  # a path or a URL
    gptq: bool = False


def choose_backend(spec: str | None, backend: str = "auto") -> BackendChoice:
    """Decide which backend serves ``spec`` without loading anything (raises ModelLoadError)."""
    from models.hf import gptq_config_of, is_hf_checkpoint

    if backend not in BACKENDS:
        raise ModelLoadError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if spec is not None and spec.startswith(("http://", "https://")):
        if backend not in ("auto", "openai_compat"):
            raise ModelLoadError(f"{spec} is a URL: only the openai_compat backend serves URLs")
        return BackendChoice("openai_compat", spec)
    if backend == "openai_compat":
        raise ModelLoadError("the openai_compat backend needs --model http(s)://HOST:PORT/v1")
    path = embedded_model_path() if spec is None else Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(f"--model {spec}: no such file or directory.")
    if path.is_dir():
        if not is_hf_checkpoint(path):
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" Did you mean {ggufs[0]}?" if ggufs else ""
            raise ModelLoadError(
                f"--model {spec} is a directory without config.json: not a Hugging Face checkpoint.{hint}"
            )
        if backend == "llamacpp":
            raise ModelLoadError(f"{spec} is a Hugging Face directory; llama.cpp serves .gguf files")
        return BackendChoice("hf", str(path), gptq=gptq_config_of(path) is not None)
    if backend == "hf":
        return BackendChoice("hf", str(path))  # a GGUF dequantized by transformers
    return BackendChoice("llamacpp", str(path))


def load_chat_model(
    spec: str | None,
    *,
    backend: str = "auto",
    chat_template: str = "auto",
    n_ctx: int = 4096,
    n_threads: int | None = None,
    pool_size: int = 2,
    gpu_layers: int = 0,
    cache_dir: str | Path | None = None,
    dtype: str = "auto",
    quantization: str | None = None,
    remote_model: str | None = None,
    remote_api_key: str | None = None,
) -> ChatModel:
    """Load the model named by ``spec`` (None: the embedded SmolLM2-135M Q4_1)."""
    choice = choose_backend(spec, backend)
    if choice.backend == "openai_compat":
        from models.openai_compat import OpenAICompatChatModel

        return OpenAICompatChatModel(
            choice.target, model=remote_model, api_key=remote_api_key, n_ctx=n_ctx, max_concurrency=pool_size
        )
    if choice.backend == "hf":
        from models.hf import HFChatModel

        if quantization is not None and choice.gptq:
            raise ModelLoadError(f"{spec} is already GPTQ-quantized; drop --quantization")
        return HFChatModel.load(
            choice.target,
            cache_dir=cache_dir,
            chat_template=chat_template,
            n_ctx=n_ctx,
            dtype=dtype,
            quantization=quantization,
            # on CPU one generation at a time is fastest, so it gets every instance's threads; a GPU
            # overlaps several generations well
            max_concurrency=pool_size if _cuda() else 1,
            n_threads=None if n_threads is None or _cuda() else n_threads * pool_size,
        )
    from models.llamacpp import LlamaCppChatModel

    if quantization is not None:
        raise ModelLoadError(
            "--quantization applies to Hugging Face checkpoints; a GGUF is already quantized"
        )
    return LlamaCppChatModel(
        choice.target,
        chat_template=chat_template,
        n_ctx=n_ctx,
        n_threads=n_threads,
        pool_size=pool_size,
        n_gpu_layers=gpu_layers,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
