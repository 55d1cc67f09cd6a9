"""PEFT -> GGUF LoRA export: llama.cpp with the exported adapter must compute what transformers + PEFT
computes (on the Q4 base, so within noise), and a broken export must be caught."""

import json

import numpy as np
import pytest

from models.embedded import embedded_model_path
from models.lora_agreement import measure_agreement
from models.lora_export import LoraExportError, export_peft_lora_to_gguf, permute_rows, read_base_gguf


def test_base_gguf_info():
    info = read_base_gguf(embedded_model_path())
    assert info.architecture == "llama" and info.qk_permuted
    assert (info.n_head, info.n_head_kv, info.n_layer) == (9, 3, 30)
    assert "blk.0.attn_q.weight" in info.tensor_names


def test_permutation_matches_transformers_inverse():
    """Our permutation is the inverse of the one transformers undoes when it dequantizes a llama GGUF."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(12 * 64 * 3, dtype=np.float32).reshape(12 * 64, 3)
    undo = LlamaTensorProcessor(config={})._reverse_permute_weights
    assert np.array_equal(undo(permute_rows(w, 12, 12), 12, 12), w)
    assert np.array_equal(undo(permute_rows(w, 36, 12), 36, 12), w)  # GQA: K uses n_head_kv
    assert not np.array_equal(permute_rows(w, 12, 12), w)


def test_exported_file_has_llama_cpp_names_and_metadata(random_lora):
    from gguf import GGUFReader

    peft_dir, gguf_path = random_lora
    reader = GGUFReader(str(gguf_path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(16.0)
    names = {t.name: t for t in reader.tensors}
    assert len(names) == 30 * 7 * 2
    a, b = names["blk.3.attn_k.weight.lora_a"], names["blk.3.attn_k.weight.lora_b"]
    assert list(a.shape) == [576, 8] and list(b.shape) == [8, 192]  # ggml order: A [in, r], B [r, out]
    assert json.loads((peft_dir / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.slow
def test_llamacpp_with_exported_adapter_agrees_with_peft(random_lora, hf_base_dir, tmp_path):
    peft_dir, gguf_path = random_lora
    report = measure_agreement(
        hf_base_dir=hf_base_dir,
        peft_adapter_dir=peft_dir,
        base_gguf=embedded_model_path(),
        gguf_adapter=gguf_path,
        questions=(
            "What is the capital of France?",
            "Why is the sky blue?",
            "Give me a synonym for happy.",
            "Name three primary colours.",
        ),
    )
    print("agreement", report.to_dict())
    assert report.top1_match >= 0.75
    assert report.delta_corr_min >= 0.93  # measured 0.97-0.98 on this adapter
    # The same adapter exported WITHOUT the Q/K permutation: the check must notice.
    broken = export_peft_lora_to_gguf(
        peft_dir, tmp_path / "broken.gguf", base_gguf=embedded_model_path(), permute_qk=False
    )
    bad = measure_agreement(
        hf_base_dir=hf_base_dir,
        peft_adapter_dir=peft_dir,
        base_gguf=embedded_model_path(),
        gguf_adapter=broken.path,
        questions=("What is the capital of France?", "Why is the sky blue?"),
    )
    print("without permutation", bad.to_dict())
    assert bad.delta_corr_mean < 0.9


def _write_adapter(d, config, tensors):
    from safetensors.numpy import save_file

    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(d / "adapter_model.safetensors"))
    return d


def _pair(layer=0, module="self_attn.q_proj", r=4, out=576, inp=576):
    k = f"base_model.model.model.layers.{layer}.{module}"
    return {
        f"{k}.lora_A.weight": np.ones((r, inp), np.float32),
        f"{k}.lora_B.weight": np.ones((out, r), np.float32),
    }


def test_per_module_scales_are_folded_into_b(tmp_path):
    from gguf import GGUFReader

    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "alpha_pattern": {"v_proj": 16}}
    d = _write_adapter(tmp_path / "a", config, {**_pair(), **_pair(module="self_attn.v_proj", out=192)})
    info = export_peft_lora_to_gguf(d, tmp_path / "a.gguf", base_gguf=embedded_model_path())
    assert info.alpha == pytest.approx(8.0)  # alpha/r = PEFT's 8/4 for q_proj
    tensors = {t.name: np.array(t.data) for t in GGUFReader(str(tmp_path / "a.gguf")).tensors}
    assert np.allclose(tensors["blk.0.attn_v.weight.lora_b"], 2.0)  # v_proj's alpha 16 = twice q's scale
    assert np.allclose(tensors["blk.0.attn_q.weight.lora_b"], 1.0)


@pytest.mark.parametrize(
    "config, tensors, message",
    [
        ({"peft_type": "LORA", "use_dora": True}, _pair(), "DoRA"),
        ({"peft_type": "LORA", "modules_to_save": ["lm_head"]}, _pair(), "modules_to_save"),
        ({"peft_type": "PREFIX_TUNING"}, _pair(), "only LoRA"),
        ({"peft_type": "LORA"}, _pair(module="self_attn.rotary"), "not supported"),
        ({"peft_type": "LORA"}, _pair(layer=40), "no tensor blk.40"),
        ({"peft_type": "LORA"}, {"x.weight": np.ones((2, 2), np.float32)}, "unsupported adapter tensor"),
    ],
)
def test_unexportable_adapters_are_refused_clearly(tmp_path, config, tensors, message):
    d = _write_adapter(tmp_path / "a", config, tensors)
    with pytest.raises(LoraExportError, match=message):
        export_peft_lora_to_gguf(d, tmp_path / "a.gguf", base_gguf=embedded_model_path())
    assert not (tmp_path / "a.gguf").exists()


def test_missing_or_truncated_adapter_files(tmp_path):
    with pytest.raises(LoraExportError, match="no adapter_config.json"):
        export_peft_lora_to_gguf(tmp_path, tmp_path / "x.gguf", base_gguf=embedded_model_path())
    d = tmp_path / "t"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(LoraExportError, match="cannot read the adapter weights"):
        export_peft_lora_to_gguf(d, tmp_path / "x.gguf", base_gguf=embedded_model_path())
