"""4-bit GGUF (llama.cpp) against 4-bit GPTQ (transformers + GPTQModel) and fp32 / bf16 (transformers),
on the embedded SmolLM2-135M-Instruct and the same prompts.

    python -m benchmarks.quantization [--threads 2] [--prompts 40] [--max-new-tokens 32] [--quick]

Per variant: size on disk, load time, time to first token and decode tokens/s (medians over the
prompts), greedy answers to the capability questions (simulation/tasks/loop_capability.jsonl): their
agreement with fp32's answers and how many contain the expected answer, and perplexity on a text that
ships with the product (the knowledge-base notes under playground/knowledge/). The GGUF is the embedded
Q4_1 file; fp32 is that GGUF dequantized by transformers (the hf backend's base); GPTQ is that fp32
checkpoint quantized with the shipped calibration texts (made once and cached in DATA_DIR/gptq, as
``launch.py quantize`` does; the time it took is reported); bf16 is the fp32 checkpoint saved in bfloat16.
Each variant loads, answers one warm-up prompt, then the measured ones, one at a time. Last line: JSON.

``--quick`` (a smoke test in well under a minute, not a measurement): 4 prompts, 12 new tokens, 128
perplexity tokens, and GPTQ quantizes a 2-block slice of the model with 8 calibration texts (all 30
blocks take minutes on 2 cores), so its answers are noise. It writes nothing into ./data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import ROOT

TASKS = ROOT / "simulation" / "tasks" / "loop_capability.jsonl"
PERPLEXITY_TEXTS = [
    ROOT / "playground" / "knowledge" / n for n in ("science.md", "history.md", "geography.md")
]
SYSTEM = "You are a knowledgeable assistant. Give short, correct answers."
QUICK = {"prompts": 4, "max_new_tokens": 12, "ppl_tokens": 128, "calibration": 8, "gptq_blocks": 2}
VARIANTS = ("gguf_q4_1", "gptq_4bit", "fp32", "bf16")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every variant")
    ap.add_argument("--prompts", type=int, default=40, help="capability questions answered (at most 40)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--ppl-tokens", type=int, default=1024, help="tokens of the shipped text for perplexity")
    ap.add_argument("--calibration", type=int, default=None, help="GPTQ calibration texts (default: all)")
    ap.add_argument("--gptq-blocks", type=int, default=None, help="quantize only the first N blocks (quick)")
    ap.add_argument("--data-dir", type=Path, default=None, help="caches (default ./data; quick: a temp dir)")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run in well under a minute: not a measurement"
    )
    args = ap.parse_args(argv)
    applied: dict[str, Any] = {}
    if args.quick:
        for dest, value in QUICK.items():
            option = "--" + dest.replace("_", "-")
            if not any(a == option or a.startswith(option + "=") for a in argv):  # a typed flag wins
                setattr(args, dest, value)
                applied[dest] = value
    return args, applied


def banner(applied: dict[str, Any]) -> str:
    settings = ", ".join(f"{k.replace('_', '-')}={v}" for k, v in applied.items())
    return f"QUICK RUN (smoke test, not a measurement): overrides {settings}"


def dir_size_mb(path: Path) -> float:
    files = (
        [path]
        if path.is_file()
        else [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")]
    )
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def questions(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    return rows[:n]


def perplexity_text() -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in PERPLEXITY_TEXTS)


def sliced_checkpoint(hf_dir: Path, blocks: int, out: Path) -> Path:
    """The first ``blocks`` decoder blocks of ``hf_dir`` (real weights), for a quick GPTQ run."""
    import shutil

    from safetensors.torch import load_file, save_file

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf_dir / "config.json").read_text())
    config["num_hidden_layers"] = blocks
    (out / "config.json").write_text(json.dumps(config))
    keep = {}
    for file in hf_dir.glob("*.safetensors"):
        for key, tensor in load_file(file).items():
            parts = key.split(".")
            if "layers" in parts and int(parts[parts.index("layers") + 1]) >= blocks:
                continue
            keep[key] = tensor
    save_file(keep, out / "model.safetensors", metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (hf_dir / name).is_file():
            shutil.copy(hf_dir / name, out / name)
    return out


def bf16_copy(hf_dir: Path, out: Path) -> Path:
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(out)
    return out


# -- measuring one variant ---------------------------------------------------------------------------
def answer_all(model, rows: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    from models.base import SamplingParams

    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    model.generate([{"role": "user", "content": "Hello!"}], params)  # warm-up: kernels, caches, repacking
    answers, ttft, speed, correct = [], [], [], 0
    for row in rows:
        r = model.generate(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["prompt"]}], params
        )
        answers.append(r.text.strip())
        correct += any(a.lower() in r.text.lower() for a in row["answers"])
        if r.ttft_s is not None:
            ttft.append(r.ttft_s)
        if r.tokens_per_s:
            speed.append(r.tokens_per_s)
    return {
        "answers": answers,
        "correct": correct,
        "ttft_ms": round(1000 * statistics.median(ttft), 1) if ttft else None,
        "tokens_per_s": round(statistics.median(speed), 1) if speed else None,
    }


def hf_perplexity(model, text: str, n_tokens: int) -> tuple[float, int]:
    """Perplexity of a transformers model on the first ``n_tokens`` of ``text``, in 512-token windows."""
    import torch

    tokenizer, lm = model.base.tokenizer, model.base.model
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, 512):
            chunk = torch.tensor([ids[start : start + 512]], device=lm.device)
            if chunk.shape[1] < 2:
                break
            out = lm(input_ids=chunk, labels=chunk)
            nll += float(out.loss) * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    return round(math.exp(nll / count), 3), count


def gguf_perplexity(gguf: Path, text: str, n_tokens: int, threads: int) -> tuple[float, int]:
    """The same on llama.cpp (its own tokenizer of the same vocabulary), from its logits."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf),
        n_ctx=512,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        verbose=False,
    )
    try:
        ids = llm.tokenize(text.encode(), add_bos=False)[:n_tokens]
        nll, count = 0.0, 0
        for start in range(0, len(ids) - 1, 512):
            chunk = ids[start : start + 512]
            if len(chunk) < 2:
                break
            llm.reset()
            llm.eval(chunk)
            logits = np.asarray(llm.scores[: len(chunk) - 1], dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            nll -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
            count += len(chunk) - 1
        return round(math.exp(nll / count), 3), count
    finally:
        llm.close()


def measure(name: str, load, rows, args, text: str, size_mb: float, ppl) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - t0
    try:
        result = answer_all(model, rows, args.max_new_tokens)
        result["perplexity"], result["perplexity_tokens"] = ppl(model)
    finally:
        model.close()
    result.update(size_mb=size_mb, load_s=round(load_s, 2), display_name=model.display_name)
    print(
        f"  {name}: {result['tokens_per_s']} tok/s, {result['correct']}/{len(rows)} correct",
        file=sys.stderr,
        flush=True,
    )
    return result


def table(results: dict[str, dict[str, Any]], n: int) -> str:
    head = "| variant | size MB | load s | TTFT ms | tok/s | agrees with fp32 | correct | perplexity |"
    lines = [head, "|" + "---|" * 8]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['size_mb']} | {r['load_s']} | {r['ttft_ms']} | {r['tokens_per_s']} | "
            f"{r['agreement_with_fp32']}/{n} | {r['correct']}/{n} | {r['perplexity']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, applied = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        print(banner(applied), flush=True)
    import torch

    from models.embedded import embedded_model_path
    from models.gptq import ensure_gptq_base, quantize, source_record
    from models.hf import HFBase, HFChatModel
    from models.hf_base import ensure_hf_base
    from models.llamacpp import LlamaCppChatModel

    torch.set_num_threads(args.threads)
    if args.data_dir is not None:
        data = args.data_dir
    elif args.quick:  # never ./data; the dequantized base is shared by every quick run
        data = Path(tempfile.mkdtemp(prefix="bench-quant-"))
    else:
        data = ROOT / "data"
    hf_cache = (
        Path(tempfile.gettempdir()) / "playground-quick-hf-base"
        if args.quick and args.data_dir is None
        else data / "hf-base"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-quant-work-"))
    gguf = embedded_model_path()
    rows = questions(args.prompts)
    text = perplexity_text()

    hf_dir = ensure_hf_base(gguf, hf_cache)
    t0 = time.perf_counter()
    if args.gptq_blocks:
        sliced = sliced_checkpoint(hf_dir, args.gptq_blocks, work / f"slice-{args.gptq_blocks}")
        gptq_dir = quantize(sliced, work / "gptq", calibration=args.calibration, log_path=work / "gptq.log")
    else:
        gptq_dir = ensure_gptq_base(
            gguf,
            data / "gptq",
            hf_cache_dir=hf_cache,
            calibration=args.calibration,
            log_path=work / "gptq.log",
        )
    gptq_s = round(time.perf_counter() - t0, 1)
    quantize_s = (source_record(gptq_dir) or {}).get("seconds")
    bf16_dir = bf16_copy(hf_dir, work / "bf16")

    def hf(path: Path, dtype: str):
        return lambda: HFChatModel(HFBase(path, dtype=dtype, n_threads=args.threads))

    def hf_ppl(model):
        return hf_perplexity(model, text, args.ppl_tokens)

    results: dict[str, dict[str, Any]] = {}
    results["fp32"] = measure("fp32", hf(hf_dir, "float32"), rows, args, text, dir_size_mb(hf_dir), hf_ppl)
    results["bf16"] = measure(
        "bf16", hf(bf16_dir, "bfloat16"), rows, args, text, dir_size_mb(bf16_dir), hf_ppl
    )
    results["gptq_4bit"] = measure(
        "gptq_4bit", hf(gptq_dir, "auto"), rows, args, text, dir_size_mb(gptq_dir), hf_ppl
    )
    results["gguf_q4_1"] = measure(
        "gguf_q4_1",
        lambda: LlamaCppChatModel(gguf, pool_size=1, n_threads=args.threads),
        rows,
        args,
        text,
        dir_size_mb(gguf),
        lambda model: gguf_perplexity(gguf, text, args.ppl_tokens, args.threads),
    )
    reference = results["fp32"]["answers"]
    for r in results.values():
        r["agreement_with_fp32"] = sum(a == b for a, b in zip(r["answers"], reference, strict=True))
    results = {name: results[name] for name in VARIANTS}
    print(table(results, len(rows)))
    summary = {
        "model": gguf.name,
        "prompts": len(rows),
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gptq": {
            "dir": str(gptq_dir),
            "quantize_s": quantize_s,
            "this_run_s": gptq_s,
            "blocks": args.gptq_blocks,
            "calibration": args.calibration,
        },
        "variants": {name: {k: v for k, v in r.items() if k != "answers"} for name, r in results.items()},
        "quick": args.quick,
    }
    if args.quick:
        print(banner(applied), flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
