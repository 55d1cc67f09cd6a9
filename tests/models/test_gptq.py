"""GPTQ 4-bit on the CPU: the embedded model quantized with GPTQModel (once per checkout, the
``gptq_base_dir`` fixture), served by the transformers backend (greedy answer, model line, adapters
switched on one base), in the app and through the official openai client, and trained on: LoRA gradients
through the 4-bit layers, and a whole training cycle whose candidate is then served with its adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.base import SamplingParams
from settings import DEFAULT_SYSTEM_PROMPT

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def gptq_model(gptq_base_dir):
    from models.loader import load_chat_model

    model = load_chat_model(str(gptq_base_dir), n_threads=2, pool_size=1)
    yield model
    model.close()


def test_the_checkpoint_is_4bit_with_group_size_64_and_says_how_it_was_made(gptq_base_dir, hf_base_dir):
    config = json.loads((gptq_base_dir / "quantize_config.json").read_text())
    assert config["bits"] == 4 and config["group_size"] == 64 and config["quant_method"] == "gptq"
    made = json.loads((gptq_base_dir / "gptq_source.json").read_text())
    assert made["model_id"] == "SmolLM2-135M-Instruct.Q4_1" and made["calibration_texts"] == 32
    assert (gptq_base_dir / "chat_template.jinja").read_text() == (
        hf_base_dir / "chat_template.jinja"
    ).read_text()
    weights = sum(p.stat().st_size for p in gptq_base_dir.glob("*.safetensors"))
    full = sum(p.stat().st_size for p in hf_base_dir.glob("*.safetensors"))
    assert weights < full / 3  # 4-bit blocks; the tied embedding stays full precision


def test_a_gptq_checkpoint_is_served_by_transformers_on_the_cpu(gptq_model, gptq_base_dir):
    from models.loader import choose_backend

    choice = choose_backend(str(gptq_base_dir))
    assert choice.backend == "hf" and choice.gptq
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU machine runs the same path there
    assert gptq_model.base.quantization == "gptq" and gptq_model.base.device == device
    assert "GPTQ 4-bit" in gptq_model.display_name and gptq_model.template.name == "model"
    layer = gptq_model.base.model.model.layers[0].self_attn.q_proj
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    assert isinstance(layer, BaseQuantLinear)  # 4-bit weights, not a dequantized copy
    if device == "cpu":
        assert type(layer).__name__ == "TorchAtenLinear"  # GPTQModel's int4 CPU kernel
    r = gptq_model.generate(QUESTION, GREEDY)
    assert "Paris" in r.text, r.text
    assert r.completion_tokens > 0 and r.finish_reason == "stop" and r.model_name == gptq_model.display_name


def test_adapter_views_switch_on_one_gptq_base(gptq_model, random_lora):
    """PEFT has no mixed-adapter batches on GPTQ layers: the base switches the active adapter per
    generation. The base's answer must come back unchanged after a generation with an adapter."""
    prompt = [{"role": "user", "content": "Why is the sky blue?"}]
    params = SamplingParams(temperature=0, max_new_tokens=12)
    before = gptq_model.generate(prompt, params).text
    view = gptq_model.with_adapter(random_lora[0], name="random")  # made on the fp32 base: same shapes
    try:
        assert "GPTQ 4-bit" in view.display_name and "random" in view.display_name
        with_adapter = view.generate(prompt, params).text
        assert with_adapter != before  # the adapter really changes the 4-bit model
        assert gptq_model.generate(prompt, params).text == before  # and the base is itself again
        assert view.generate(prompt, params).text == with_adapter
    finally:
        view.close()
    assert gptq_model.base.adapters == {}


def test_lora_gradients_flow_through_the_4bit_layers(gptq_base_dir):
    """The trainers load the GPTQ base as it is served and train a LoRA on it. A no-grad eval forward
    first (a generation, a reference pass) must not switch GPTQModel's CPU layers to their int4
    inference kernel, which has no backward."""
    import torch
    from peft import get_peft_model

    from trainers.common import CommonConfig, load_policy

    model, tokenizer, peft_config = load_policy(CommonConfig(base_model_dir=str(gptq_base_dir)))
    model = get_peft_model(model, peft_config)
    batch = tokenizer(["The capital of France is Paris."], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        model(**batch)
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    modes = {m.linear_mode for m in model.modules() if type(m).__name__ == "TorchAtenLinear"}
    assert modes == {"train"}
    first = model.base_model.model.model.layers[0].self_attn.q_proj
    grad = first.lora_B["default"].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.browser
def test_the_app_and_the_openai_client_chat_with_a_gptq_model(server_factory, page, gptq_base_dir):
    import openai

    from tests.e2e.test_chat_browser import wait_for_reply

    server = server_factory("--model", str(gptq_base_dir), "--no-scheduler")
    page.goto(server.url)
    assert "GPTQ 4-bit" in page.locator("#model-info").inner_text()
    box = page.locator("#chat-input textarea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    wait_for_reply(page)
    assert page.locator('#chatbot [data-testid="bot"]').first.inner_text().strip()

    client = openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0)
    listed = client.models.list().data[0]
    reply = client.chat.completions.create(model=listed.id, messages=QUESTION, temperature=0, max_tokens=24)
    assert "Paris" in reply.choices[0].message.content


@pytest.mark.slow
def test_a_training_cycle_on_a_gptq_base_serves_its_candidate_with_the_adapter(
    tmp_path, hf_base_dir, gptq_base_dir
):
    from feedback_store.store import FeedbackStore
    from models.loader import load_chat_model
    from models.service import ModelService
    from models.versions import VersionLoader
    from tests.trainers.conftest import seed_feedback
    from tests.trainers.test_cycle import cycle_config, data_dir_with_base
    from trainers.worker import run_cycle_for

    data = data_dir_with_base(tmp_path / "data", hf_base_dir)
    # the shipped replay text: 64 greedy replay answers through GPTQ on a CPU take two minutes, and
    # the answers path is the GGUF cycles' (tests/trainers/test_cycle.py); training on 4 bits is this one's
    config = cycle_config(data, model=str(gptq_base_dir), replay="text")
    store = FeedbackStore(config.db_path)
    try:
        seed_feedback(store)
        run = store.runs.start("test", config.to_dict())
        assert run_cycle_for(config, run.id) == 0
        run = store.runs.get(run.id)
        assert run.status == "succeeded" and run.decision == "deployed", run
        candidate = store.versions.get(run.candidate_version_id)
        assert candidate.base_model == gptq_base_dir.name and candidate.gguf_adapter_path is None
        adapter = json.loads(Path(candidate.adapter_path, "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(gptq_base_dir)  # trained on the 4-bit base
        root = load_chat_model(str(gptq_base_dir), n_threads=2, pool_size=1)
        base = store.versions.ensure_base(root.model_id)
        service = ModelService.from_registry(VersionLoader(root), store.versions, base_version_id=base.id)
        try:
            served = service.served
            assert served.version_id == candidate.id and "GPTQ 4-bit" in served.model.display_name
            r = served.model.generate(QUESTION, GREEDY)
            assert r.completion_tokens > 0
        finally:
            service.close()
    finally:
        store.close()
