"""Session fixtures for the backend tests: the embedded GGUF dequantized for transformers (made once per
checkout and cached under .pytest_cache, as the app caches it under its data dir), and the transformers
backend on it (the random LoRA adapter is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_model(hf_base_dir):
    """The transformers backend on the dequantized embedded model (root: owns the base)."""
    from models.hf import HFBase, HFChatModel

    model = HFChatModel(HFBase(hf_base_dir, n_threads=None))
    yield model
    model.close()
