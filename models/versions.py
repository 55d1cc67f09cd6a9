"""Loading a registered model version (base + adapter) as a servable ``ChatModel``, for every backend.

- llama.cpp: a new pool on the same GGUF with the version's GGUF LoRA (``lora_path``); a version that
  only has a PEFT adapter is exported to GGUF first (cached next to the adapter).
- transformers: a view of the one loaded base with the version's PEFT adapter (no second copy).
- openai_compat: the remote server's model; adapters must be served by that server, not by us.

The loader never touches the database: it reads ``ModelVersion`` rows the caller hands it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from models.base import ChatModel, ModelLoadError

log = logging.getLogger(__name__)


class VersionRow(Protocol):
    """What the loader needs from a version row (feedback_store.store.ModelVersion has it)."""

    id: int
    name: str
    base_model: str
    adapter_path: str | None
    gguf_adapter_path: str | None


class VersionLoader:
    """Turns version rows into loaded models that share the ``root`` model's base weights and settings."""

    def __init__(self, root: ChatModel):
        self.root = root
        self._root_handed_out = False
        self._lock = threading.Lock()

    @property
    def base_model(self) -> str:
        return self.root.model_id

    def load(self, version: VersionRow) -> ChatModel:
        """Load ``version``; raises ModelLoadError with the reason (missing/corrupt adapter, wrong base)."""
        from models.hf import HFChatModel
        from models.llamacpp import LlamaCppChatModel
        from models.openai_compat import OpenAICompatChatModel

        if version.base_model != self.root.model_id:
            raise ModelLoadError(
                f"version {version.id} is for base model {version.base_model!r}, but this server serves "
                f"{self.root.model_id!r}"
            )
        root = self.root
        label = (
            f"{root.display_name} · {version.name}"
            if version.adapter_path or version.gguf_adapter_path
            else None
        )
        if isinstance(root, LlamaCppChatModel):
            lora = self._gguf_adapter(version, root.path)
            if lora is None:
                with self._lock:  # the first request for the base version gets the root itself
                    if not self._root_handed_out:
                        self._root_handed_out = True
                        return root
            return root.clone(lora_path=lora, display_name=label)
        if isinstance(root, HFChatModel):
            if version.adapter_path is None and version.gguf_adapter_path is not None:
                raise ModelLoadError(
                    f"version {version.id} has only a GGUF adapter; the transformers backend needs its PEFT "
                    "adapter directory (adapter_path)"
                )
            return root.with_adapter(
                version.adapter_path, name=f"v{version.id}" if version.adapter_path else None
            )
        if isinstance(root, OpenAICompatChatModel):
            if version.adapter_path or version.gguf_adapter_path:
                raise ModelLoadError(
                    f"version {version.id} has an adapter, but {root.display_name} is a remote server: load the "
                    "adapter there (e.g. vLLM --lora-modules) and serve it as its own model"
                )
            return root
        raise ModelLoadError(f"no version loader for backend {type(root).__name__}")

    @staticmethod
    def _gguf_adapter(version: VersionRow, base_gguf: Path) -> Path | None:
        if version.gguf_adapter_path:
            path = Path(version.gguf_adapter_path)
            if not path.is_file():
                raise ModelLoadError(f"version {version.id}: GGUF adapter {path} is missing")
            return path
        if version.adapter_path is None:
            return None
        from models.lora_export import export_peft_lora_to_gguf

        adapter_dir = Path(version.adapter_path)
        if not adapter_dir.is_dir():
            raise ModelLoadError(f"version {version.id}: adapter directory {adapter_dir} is missing")
        out = adapter_dir / "adapter-lora.gguf"
        config = adapter_dir / "adapter_config.json"
        if not out.is_file() or (config.is_file() and out.stat().st_mtime < config.stat().st_mtime):
            log.info("exporting the PEFT adapter of version %s to %s for llama.cpp", version.id, out)
            export_peft_lora_to_gguf(adapter_dir, out, base_gguf=base_gguf)
        return out

    def close(self) -> None:
        """Free what the loader itself holds (the transformers base shared by all its views)."""
        from models.hf import HFChatModel
        from models.llamacpp import LlamaCppChatModel

        if isinstance(self.root, HFChatModel):
            self.root.close()
        elif isinstance(self.root, LlamaCppChatModel) and not self._root_handed_out:
            self.root.close()  # never served (an adapter version was deployed all along)
