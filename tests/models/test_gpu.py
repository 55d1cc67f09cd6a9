"""GPU paths of the transformers backend: the GPTQ 4-bit checkpoint of the CPU tests (the same
``gptq_base_dir`` fixture, ``models/gptq.py``: quantized on the GPU when there is one) served through
transformers + GPTQModel's GPU kernels, bitsandbytes NF4, and bf16 on CUDA. Skipped, with the reason, on
a machine without CUDA or without the extras (``scripts/setup.sh --gptq``, ``pip install -e .[gpu]``)."""

import importlib.util

import pytest

from models.base import SamplingParams
from models.loader import choose_backend, load_chat_model
from settings import DEFAULT_SYSTEM_PROMPT

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda(), reason="no CUDA GPU on this machine: GPTQ/NF4/bf16 serving needs one"),
]


def needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e .[gpu]")


def test_gptq_checkpoint_is_served_through_transformers(gptq_base_dir):
    choice = choose_backend(str(gptq_base_dir))
    assert choice.backend == "hf" and choice.gptq
    model = load_chat_model(str(gptq_base_dir))
    try:
        assert model.base.quantization == "gptq" and model.base.device == "cuda"
        assert "GPTQ 4-bit" in model.display_name
        g = model.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=24))
        chunks = list(g)
        assert chunks and g.result.completion_tokens > 0 and g.result.text == "".join(chunks)
        print("GPTQ 4-bit reply:", g.result.text, f"{g.result.tokens_per_s or 0:.0f} tok/s")
    finally:
        model.close()


def test_nf4_loads_and_generates(hf_base_dir):
    needs("bitsandbytes")
    model = load_chat_model(str(hf_base_dir), quantization="nf4")
    try:
        assert model.base.quantization == "nf4"
        r = model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=24))
        assert r.completion_tokens > 0 and r.text
    finally:
        model.close()


def test_bf16_on_cuda_answers(hf_base_dir, random_lora):
    model = load_chat_model(str(hf_base_dir), dtype="bfloat16")
    try:
        assert model.base.device == "cuda"
        assert "Paris" in model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=24)).text
        view = model.with_adapter(random_lora[0], name="gpu-lora")
        assert view.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=8)).completion_tokens > 0
        view.close()
    finally:
        model.close()
