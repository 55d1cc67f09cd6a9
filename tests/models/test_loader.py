"""Backend auto-selection from --model, without loading anything heavy."""

import json

import pytest

from models.base import ModelLoadError
from models.embedded import embedded_model_path
from models.loader import choose_backend, load_chat_model


def hf_dir(tmp_path, name="vicuna-7b", **config):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    return d


def test_auto_selection(tmp_path):
    assert choose_backend(None).backend == "llamacpp"
    assert choose_backend(str(embedded_model_path())).backend == "llamacpp"
    assert choose_backend(None, "hf").backend == "hf"  # the embedded GGUF, dequantized by transformers
    plain = choose_backend(str(hf_dir(tmp_path)))
    assert plain.backend == "hf" and not plain.gptq
    gptq = choose_backend(
        str(hf_dir(tmp_path, "g1", quantization_config={"quant_method": "gptq", "bits": 4}))
    )
    assert gptq.backend == "hf" and gptq.gptq
    legacy = hf_dir(tmp_path, "g2")
    (legacy / "quantize_config.json").write_text('{"bits": 4, "group_size": 128}')
    assert choose_backend(str(legacy)).gptq
    awq = choose_backend(str(hf_dir(tmp_path, "a", quantization_config={"quant_method": "awq"})))
    assert awq.backend == "hf" and not awq.gptq
    assert choose_backend("http://127.0.0.1:8000/v1").backend == "openai_compat"
    assert choose_backend("https://example.org", "openai_compat").backend == "openai_compat"


def test_bad_specs_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        choose_backend(str(tmp_path / "missing.gguf"))
    d = tmp_path / "ggufs"
    d.mkdir()
    (d / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=r"Did you mean .*model.Q4_K_M.gguf"):
        choose_backend(str(d))
    with pytest.raises(ModelLoadError, match="only the openai_compat backend"):
        choose_backend("http://x:1", "llamacpp")
    with pytest.raises(ModelLoadError, match="needs --model http"):
        choose_backend(None, "openai_compat")
    with pytest.raises(ModelLoadError, match="llama.cpp serves .gguf"):
        choose_backend(str(hf_dir(tmp_path)), "llamacpp")
    with pytest.raises(ModelLoadError, match="--backend must be"):
        choose_backend(None, "vllm")
    with pytest.raises(ModelLoadError, match="a GGUF is already quantized"):
        load_chat_model(None, quantization="nf4")
