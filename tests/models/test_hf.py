"""The transformers backend on the real embedded model (GGUF dequantized by transformers), PEFT adapters
on top, and the GPU-only paths' errors on CPU."""

import json
import threading
import time

import pytest

from models.base import ModelLoadError, SamplingParams
from models.hf import NF4_NEEDS_GPU, HFBase, HFChatModel, ensure_hf_base, gptq_config_of
from settings import DEFAULT_SYSTEM_PROMPT

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_greedy_answer_streams_and_matches_llamacpp(hf_model, embedded_model):
    g = hf_model.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=40))
    chunks = list(g)
    r = g.result
    assert len(chunks) > 1 and "".join(chunks) == r.text
    assert "Paris" in r.text and r.finish_reason == "stop"
    assert r.prompt == hf_model.render_prompt(QUESTION) == embedded_model.render_prompt(QUESTION)
    assert r.prompt_tokens == embedded_model.count_tokens(r.prompt)
    assert r.ttft_s and r.ttft_s > 0 and 0 < r.completion_tokens <= 40
    # same weights (the Q4 dequantized), same template: the greedy start agrees with llama.cpp
    cpp = embedded_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=40)).text
    assert cpp.split()[:4] == r.text.split()[:4]


def test_stop_strings_length_and_seeds(hf_model):
    r = hf_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=40, stop=("Paris",)))
    assert "Paris" not in r.text and r.text and r.finish_reason == "stop"
    r = hf_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=3))
    assert r.finish_reason == "length" and r.completion_tokens == 3
    p = SamplingParams(temperature=1.0, seed=11, max_new_tokens=8)
    assert hf_model.generate(QUESTION, p).text == hf_model.generate(QUESTION, p).text


def test_cancel_stops_the_generation(hf_model):
    g = hf_model.stream(
        [{"role": "user", "content": "Write a very long story about a dragon."}],
        SamplingParams(temperature=0.8, seed=1, max_new_tokens=300),
    )
    next(g)
    g.cancel()
    r = g.wait()
    assert r.finish_reason == "cancelled" and r.completion_tokens < 300
    assert hf_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=4)).completion_tokens > 0


def test_adapter_views_generate_differently_and_concurrently(hf_model, random_lora):
    peft_dir, _ = random_lora
    lora = hf_model.with_adapter(peft_dir, name="random")
    base = hf_model.with_adapter(None)
    try:
        p = SamplingParams(temperature=0, max_new_tokens=12)
        prompt = [{"role": "user", "content": "Why is the sky blue?"}]
        base_text = base.generate(prompt, p).text
        lora_text = lora.generate(prompt, p).text
        assert base_text != lora_text  # the adapter really changes the model
        assert base_text == hf_model.generate(prompt, p).text  # the base view is the bare base
        # both versions at once: each generation names its adapter, nothing shared flips
        gens = [v.stream(prompt, p) for v in (lora, base, lora)]
        assert [g.wait().text for g in gens] == [lora_text, base_text, lora_text]
    finally:
        lora.close()
        base.close()
    assert hf_model.base.adapters == {} and hf_model.base._peft is None  # unwrapped back to the bare base
    assert hf_model.generate(prompt, p).text == base_text


def test_corrupt_or_missing_adapter_is_a_clear_error(hf_model, random_lora, tmp_path):
    with pytest.raises(ModelLoadError, match="not a PEFT adapter"):
        hf_model.with_adapter(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    peft_dir, _ = random_lora
    (bad / "adapter_config.json").write_text((peft_dir / "adapter_config.json").read_text())
    (bad / "adapter_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="cannot load the PEFT adapter"):
        hf_model.with_adapter(bad, name="bad")
    assert "bad" not in hf_model.base.adapters
    assert "Paris" in hf_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=30)).text


def test_ensure_hf_base_is_cached_and_reloads_fast(hf_base_dir):
    from models.embedded import embedded_model_path

    t0 = time.perf_counter()
    again = ensure_hf_base(embedded_model_path(), hf_base_dir.parent)
    assert again == hf_base_dir and time.perf_counter() - t0 < 5  # a cache hit converts nothing
    source = json.loads((hf_base_dir / "gguf_source.json").read_text())
    assert source["model_id"] == embedded_model_path().name
    assert (hf_base_dir / "config.json").is_file() and (hf_base_dir / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((hf_base_dir / "config.json").read_text())
    assert not list(hf_base_dir.parent.glob(".tmp-*"))  # no half-written copies left behind


def test_the_same_gguf_installed_elsewhere_reuses_its_dequantized_copy(hf_base_dir, tmp_path):
    import shutil

    from models.embedded import embedded_model_path

    copy = tmp_path / "elsewhere" / embedded_model_path().name
    copy.parent.mkdir()
    shutil.copy(embedded_model_path(), copy)  # a fresh install: another path, another mtime
    assert ensure_hf_base(copy, hf_base_dir.parent) == hf_base_dir


def test_the_base_keeps_the_gguf_identity(hf_model):
    from models.embedded import embedded_model_path

    assert hf_model.model_id == embedded_model_path().name  # versions apply to both backends
    assert hf_model.template.name == "model" and hf_model.context_length >= 4096


def _fake_checkpoint(tmp_path, hf_base_dir, **extra_config):
    d = tmp_path / "ckpt"
    d.mkdir()
    config = json.loads((hf_base_dir / "config.json").read_text())
    config.update(extra_config)
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_a_gptq_group_size_the_cpu_kernel_cannot_use_is_refused_before_loading(tmp_path, hf_base_dir):
    """GPTQ serves on the CPU (tests/models/test_gptq.py), but a group size that does not divide a layer's
    input width fails only at the first token there: the load says so, and what to re-quantize with."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; tests/models/test_gpu.py covers GPTQ there")
    d = _fake_checkpoint(
        tmp_path, hf_base_dir, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128}
    )
    assert gptq_config_of(d)["bits"] == 4
    with pytest.raises(ModelLoadError) as info:
        HFChatModel.load(d)
    message = str(info.value)
    assert "does not divide the hidden size 576" in message and "--group-size 64" in message
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((hf_base_dir / "config.json").read_text())
    (legacy / "quantize_config.json").write_text('{"bits": 4, "group_size": 128, "desc_act": false}')
    assert gptq_config_of(legacy)["group_size"] == 128
    with pytest.raises(ModelLoadError, match="cannot be served on the CPU"):
        HFBase(legacy)


def test_nf4_on_cpu_says_what_it_needs(hf_base_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; tests/models/test_gpu.py covers NF4 there")
    with pytest.raises(ModelLoadError) as info:
        HFBase(hf_base_dir, quantization="nf4")
    assert NF4_NEEDS_GPU in str(info.value)


def test_two_threads_share_one_slot(hf_model):
    results, errors = [], []

    def run(i):
        try:
            results.append(
                hf_model.generate(QUESTION, SamplingParams(temperature=0.7, seed=i, max_new_tokens=8))
            )
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == 3
    assert max(r.queue_s for r in results) > 0  # one slot on CPU: the others waited


def test_output_constraints_are_refused_not_ignored(hf_model, store):
    """transformers has no grammar here: a JSON schema is refused before anything runs, and the OpenAI API
    turns that into a 400 naming the request field that asked for it."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from models.base import UnsupportedParameter
    from models.service import ModelService
    from playground.openai_api import OpenAIAPI
    from playground.safety import Safety
    from settings import Settings

    with pytest.raises(UnsupportedParameter, match="transformers backend cannot") as caught:
        hf_model.stream(QUESTION, SamplingParams(json_schema='{"type": "object"}'))
    assert caught.value.param == "json_schema"
    base = store.versions.ensure_base(hf_model.model_id)
    service = ModelService(hf_model, base.id, base.name)
    api = OpenAIAPI(Settings(), store, service, safety=Safety.from_settings(Settings(), store, service))
    http = TestClient(FastAPI(routes=api.routes()))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    for extra, param in (
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [tool]}, "tools"),
    ):
        r = http.post("/v1/chat/completions", json={"model": "playground", "messages": QUESTION, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.json()
        assert "transformers backend cannot" in r.json()["error"]["message"]
    r = http.post("/v1/chat/completions", json={"model": "playground", "messages": QUESTION, "max_tokens": 4})
    assert r.status_code == 200  # plain chat still works
