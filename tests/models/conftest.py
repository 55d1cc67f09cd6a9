"""Session fixtures for the backend tests: the transformers backend on the embedded GGUF dequantized for
transformers (``hf_base_dir`` in tests/conftest.py, made once in the folder the quick benchmarks share, as
the app caches it under its data dir; the random LoRA adapter is there too)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_model(hf_base_dir):
    """The transformers backend on the dequantized embedded model (root: owns the base)."""
    from models.hf import HFBase, HFChatModel

    model = HFChatModel(HFBase(hf_base_dir, n_threads=None))
    yield model
    model.close()
