"""``python launch.py quantize`` as a user runs it (subprocesses): a GPTQ checkpoint with a progress bar
and the Vicuna template carried into it, a clear error for a group size the model cannot use, and the
embedded model's copy made once and then reused from the data directory.

Quantizing all 30 blocks of the embedded model takes about a minute on two idle cores, so the end-to-end
run quantizes a small real checkpoint (2 blocks, random weights, the embedded tokenizer) named like a
Vicuna model without a chat template; the embedded model's own copy is the session's ``gptq_base_dir``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GPTQ_CALIBRATION, ROOT


def quantize(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "quantize", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_vicuna(tmp_path, hf_base_dir) -> Path:
    """A 2-block llama checkpoint with the embedded model's tokenizer and no chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig.from_pretrained(hf_base_dir)
    config.update(
        dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    config.head_dim = 32
    out = tmp_path / "tiny-vicuna-2b"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(hf_base_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


@pytest.mark.slow
def test_quantize_writes_a_gptq_checkpoint_with_a_progress_bar_and_the_vicuna_template(tiny_vicuna, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "tiny-gptq"
    r = quantize("--method", "gptq", "--model", str(tiny_vicuna), "--out", str(out), "--bits", "4",
                 "--group-size", "64", "--calibration", "8")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(out) and summary["bits"] == 4 and summary["group_size"] == 64
    assert "100%" in r.stderr and "quantizing block 2/2" in r.stderr  # the bar, block by block
    assert len(r.stdout) + len(r.stderr) < 20_000  # GPTQModel's own chatter went to the log file
    assert Path(summary["log"]).stat().st_size > 0
    config = json.loads((out / "quantize_config.json").read_text())
    assert config["bits"] == 4 and config["group_size"] == 64
    made = json.loads((out / "gptq_source.json").read_text())
    assert made["chat_template"] == "vicuna_v1.1" and made["calibration_texts"] == 8
    # the template travels with the checkpoint: transformers renders it without knowing our built-ins
    prompt = AutoTokenizer.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("A chat between a curious user") and prompt.endswith("USER: Hi ASSISTANT:")
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_a_group_size_that_does_not_divide_the_hidden_size_is_a_clear_error(tmp_path, hf_base_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hf-base").symlink_to(hf_base_dir.parent, target_is_directory=True)
    r = quantize("--method", "gptq", "--data-dir", str(data), "--group-size", "128", timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "does not divide the hidden size 576" in r.stderr and "--group-size 64" in r.stderr
    assert "Traceback" not in r.stderr
    r = quantize("--method", "gptq", "--data-dir", str(data), "--group-size", "48", timeout=300)
    assert r.returncode == 2 and "16, 32, 64, 128" in r.stderr and "Traceback" not in r.stderr
    assert not (data / "gptq").exists() or not any(p.name.endswith("g128") for p in (data / "gptq").iterdir())


def test_the_embedded_models_copy_is_made_once_and_reused(tmp_path, hf_base_dir, gptq_base_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hf-base").symlink_to(hf_base_dir.parent, target_is_directory=True)
    (data / "gptq").symlink_to(gptq_base_dir.parent, target_is_directory=True)  # made by the fixture
    r = quantize(
        "--method", "gptq", "--data-dir", str(data), "--calibration", str(GPTQ_CALIBRATION), timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(summary["out"]).resolve() == gptq_base_dir.resolve()
    assert summary["seconds"] < 60 and f"--model {summary['out']}" in r.stdout
