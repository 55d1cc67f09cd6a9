"""The base model trainers start from: the served base, as a plain Hugging Face checkpoint.

For a GGUF base (the embedded default) transformers dequantizes the file once (~15 s for 135M
parameters); the result is saved as a float32 checkpoint in the data directory and reloads in ~0.2 s
(FACTS.md: clearing ``hf_quantizer`` and ``quantization_config`` makes it serialisable). A Hugging Face
directory (plain or GPTQ) is used as it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path

from trainers.common import atomic_output_dir

log = logging.getLogger(__name__)


def _gguf_cache_name(gguf_path: Path) -> str:
    st = gguf_path.stat()
    fingerprint = f"{gguf_path.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    return f"{gguf_path.stem}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:10]}"


def ensure_hf_base(model_path: str | Path, cache_dir: str | Path) -> Path:
    """Return a directory that ``from_pretrained`` loads quickly for the served base ``model_path``."""
    model_path = Path(model_path)
    if model_path.is_dir():
        if not (model_path / "config.json").exists():
            raise FileNotFoundError(f"{model_path} is not a Hugging Face checkpoint (no config.json)")
        return model_path
    if model_path.suffix != ".gguf":
        raise ValueError(f"cannot train on {model_path}: expected a .gguf file or a Hugging Face directory")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _gguf_cache_name(model_path)
    if (target / "config.json").exists():
        return target
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting the same file
        if (target / "config.json").exists():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("dequantizing %s once into %s (about 15 s for the embedded model)", model_path.name, target)
        tokenizer = AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            model_path.parent, gguf_file=model_path.name, dtype=torch.float32
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_output_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return target
