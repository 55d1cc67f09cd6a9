"""Choose and load a backend for ``--model``: nothing = the embedded GGUF, a ``.gguf`` file = llama.cpp."""

from __future__ import annotations

from pathlib import Path

from models.base import ChatModel, ModelLoadError
from models.embedded import embedded_model_path
from models.llamacpp import LlamaCppChatModel


def load_chat_model(
    spec: str | None,
    *,
    chat_template: str = "auto",
    n_ctx: int = 4096,
    n_threads: int | None = None,
    pool_size: int = 2,
    gpu_layers: int = 0,
) -> ChatModel:
    """Load the model named by ``spec`` (None: the embedded SmolLM2-135M Q4_1)."""
    path = embedded_model_path() if spec is None else Path(spec).expanduser()
    if spec is not None and spec.startswith(("http://", "https://")):
        raise ModelLoadError(
            f"{spec}: serving a remote OpenAI-compatible server is not supported by this build."
        )
    if not path.exists():
        raise ModelLoadError(f"--model {spec}: no such file or directory.")
    if path.is_dir():
        raise ModelLoadError(
            f"--model {spec} is a directory; this build serves GGUF files. Pass the .gguf file inside it."
        )
    return LlamaCppChatModel(
        path,
        chat_template=chat_template,
        n_ctx=n_ctx,
        n_threads=n_threads,
        pool_size=pool_size,
        n_gpu_layers=gpu_layers,
    )
