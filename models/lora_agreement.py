"""Does llama.cpp + an exported GGUF LoRA compute what transformers + PEFT computes?

Used by the export test and by ``python -m benchmarks.lora_export``. For each prompt it takes the
next-token logits of four models on the same token ids: transformers base / base+adapter, llama.cpp
base / base+adapter. It reports how often the two adapted models agree on the top-1 token and how well
the adapter's effect (logit delta = adapted - base) correlates between the two engines. The llama.cpp
base is the Q4 GGUF and transformers runs its fp32 dequantization, so small differences are normal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the moon.",
    "How many legs does a spider have?",
    "Give me a synonym for happy.",
    "Why is the sky blue?",
    "What is 12 plus 7?",
    "Translate 'good morning' into Spanish.",
)


@dataclass
class AgreementReport:
    prompts: int
    top1_match: float  # llama.cpp+adapter and PEFT agree on the next token
    delta_corr_mean: float  # Pearson correlation of the logit deltas, mean over prompts
    delta_corr_min: float
    base_top1_match: float  # the two engines without adapter (the Q4 vs fp32 baseline)
    adapter_flips_top1: float  # share of prompts where the adapter changes PEFT's top-1 token

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def make_random_lora(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    rank: int = 8,
    alpha: float = 16.0,
    b_std: float = 0.02,
) -> Path:
    """A non-trivial LoRA (q/k/v/o + MLP, random non-zero B) on the HF base, saved as a PEFT adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, b_std)
    out_dir = Path(out_dir)
    peft_model.save_pretrained(out_dir)
    return out_dir


def make_random_gguf_lora(
    base_gguf: str | Path,
    out_dir: str | Path,
    *,
    layers: int = 4,
    rank: int = 8,
    seed: int = 0,
    b_std: float = 0.5,
) -> Path:
    """A small random q/v LoRA written as PEFT files with numpy alone (no transformers base needed) and
    exported to GGUF: enough to make a visibly different version for hot-swap tests and benchmarks."""
    from safetensors.numpy import save_file

    from models.lora_export import export_peft_lora_to_gguf, read_base_gguf

    info = read_base_gguf(base_gguf)
    hidden, head_dim = info.embedding_length, info.embedding_length // info.n_head
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(min(layers, info.n_layer)):
        for module, out in (("q_proj", hidden), ("v_proj", head_dim * info.n_head_kv)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.05, (rank, hidden)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, b_std, (out, rank)).astype(np.float32)
    out_dir = Path(out_dir)
    peft_dir = out_dir / "peft"
    peft_dir.mkdir(parents=True, exist_ok=True)
    (peft_dir / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"]}
        )
    )
    save_file(tensors, str(peft_dir / "adapter_model.safetensors"))
    return export_peft_lora_to_gguf(peft_dir, out_dir / "adapter.gguf", base_gguf=base_gguf).path


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom else 0.0


def _llama_logits(model_path: Path, lora_path: Path | None, token_lists: list[list[int]], n_threads: int):
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model_path),
        lora_path=str(lora_path) if lora_path else None,
        n_ctx=512,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        logits_all=True,
        verbose=False,
    )
    try:
        rows = []
        for tokens in token_lists:
            llm.reset()
            llm.eval(tokens)
            rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
        return rows
    finally:
        llm.close()


def measure_agreement(
    *,
    hf_base_dir: str | Path,
    peft_adapter_dir: str | Path,
    base_gguf: str | Path,
    gguf_adapter: str | Path,
    questions: Sequence[str] = DEFAULT_QUESTIONS,
    n_threads: int = 1,
) -> AgreementReport:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_base_dir)
    token_lists = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )
        for q in questions
    ]
    token_lists = [
        list(t["input_ids"] if isinstance(t, dict) or hasattr(t, "keys") else t) for t in token_lists
    ]
    model = AutoModelForCausalLM.from_pretrained(hf_base_dir)
    peft_model = PeftModel.from_pretrained(model, str(peft_adapter_dir)).eval()
    hf_base, hf_lora = [], []
    with torch.inference_mode():
        for tokens in token_lists:
            ids = torch.tensor([tokens])
            hf_lora.append(peft_model(input_ids=ids).logits[0, -1].double().numpy())
            with peft_model.disable_adapter():
                hf_base.append(peft_model(input_ids=ids).logits[0, -1].double().numpy())
    del peft_model, model
    cpp_base = _llama_logits(Path(base_gguf), None, token_lists, n_threads)
    cpp_lora = _llama_logits(Path(base_gguf), Path(gguf_adapter), token_lists, n_threads)
    n = len(token_lists)
    corr = [
        _pearson(hl - hb, cl - cb)
        for hb, hl, cb, cl in zip(hf_base, hf_lora, cpp_base, cpp_lora, strict=True)
    ]
    return AgreementReport(
        prompts=n,
        top1_match=sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(hf_lora, cpp_lora, strict=True)) / n,
        delta_corr_mean=float(np.mean(corr)),
        delta_corr_min=float(np.min(corr)),
        base_top1_match=sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(hf_base, cpp_base, strict=True))
        / n,
        adapter_flips_top1=sum(
            int(np.argmax(a) != np.argmax(b)) for a, b in zip(hf_base, hf_lora, strict=True)
        )
        / n,
    )
