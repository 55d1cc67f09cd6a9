"""Session fixtures for the backend tests: the embedded GGUF dequantized for transformers (made once per
checkout and cached under .pytest_cache, as the app caches it under its data dir), the transformers
backend on it, and a non-trivial random LoRA adapter (PEFT + its GGUF export)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_model(hf_base_dir):
    """The transformers backend on the dequantized embedded model (root: owns the base)."""
    from models.hf import HFBase, HFChatModel

    model = HFChatModel(HFBase(hf_base_dir, n_threads=None))
    yield model
    model.close()


@pytest.fixture(scope="session")
def random_lora(hf_base_dir, tmp_path_factory):
    """r=8 LoRA on q/k/v/o + MLP with random non-zero B (seed 0), as a PEFT dir and as a GGUF LoRA."""
    from models.embedded import embedded_model_path
    from models.lora_agreement import make_random_lora
    from models.lora_export import export_peft_lora_to_gguf

    root = tmp_path_factory.mktemp("lora")
    peft_dir = make_random_lora(hf_base_dir, root / "peft", seed=0, b_std=0.1)
    gguf = export_peft_lora_to_gguf(peft_dir, root / "adapter.gguf", base_gguf=embedded_model_path()).path
    return peft_dir, gguf
