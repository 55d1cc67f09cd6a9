"""Agreement of llama.cpp + an exported GGUF LoRA with transformers + PEFT on the embedded model.

    python -m benchmarks.lora_export [--b-std 0.1] [--seed 0] [--data-dir data] [--quick]

Makes a random non-trivial LoRA (r=8 on q/k/v/o + MLP, seeded) on the dequantized base, exports it,
and compares next-token distributions on 8 chat prompts (top-1 agreement, correlation of the logit
deltas), then does the same for an export without the Q/K permutation as a control. Also times the
export and loading the adapter into llama.cpp. The dequantized base is cached in DATA_DIR/hf-base.
``--quick`` compares on 2 prompts with one OpenMP thread that sleeps while it waits, and keeps the base
in the quick runs' shared temporary folder (unless --data-dir is given). Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks import quick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b-std", type=float, default=0.1, help="std of the random LoRA B matrices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, help="compare on the first N chat prompts (default all 8)")
    ap.add_argument("--data-dir", help="the dequantized base is cached in DATA_DIR/hf-base (default: data)")
    quick.add_quick_flag(ap)
    args = ap.parse_args()
    applied = quick.apply_quick(ap, args, {"prompts": 2, "threads": 1})
    if args.quick:
        quick.calm_threads(applied)  # before torch and llama.cpp load their OpenMP runtimes
    quick.announce(applied, args.quick)

    from models.embedded import embedded_model_path
    from models.hf import ensure_hf_base
    from models.llamacpp import LlamaCppChatModel
    from models.lora_agreement import DEFAULT_QUESTIONS, make_random_lora, measure_agreement
    from models.lora_export import export_peft_lora_to_gguf

    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    # A quick run never writes into ./data: the base goes to the quick runs' shared temporary cache.
    cache = quick.hf_cache(args.data_dir) if args.quick else Path(args.data_dir or "data") / "hf-base"
    questions = DEFAULT_QUESTIONS[: args.prompts] if args.prompts else DEFAULT_QUESTIONS
    gguf = embedded_model_path()
    t0 = time.perf_counter()
    base_dir = ensure_hf_base(gguf, cache)
    base_s = time.perf_counter() - t0
    peft_dir = make_random_lora(base_dir, work / "peft", seed=args.seed, b_std=args.b_std)
    t0 = time.perf_counter()
    info = export_peft_lora_to_gguf(peft_dir, work / "adapter.gguf", base_gguf=gguf)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    LlamaCppChatModel(gguf, pool_size=1, n_threads=1, lora_path=info.path).close()
    load_s = time.perf_counter() - t0

    def agreement(gguf_adapter: Path):
        """How well llama.cpp with ``gguf_adapter`` agrees with PEFT's adapter on the questions."""
        return measure_agreement(
            hf_base_dir=base_dir,
            peft_adapter_dir=peft_dir,
            base_gguf=gguf,
            gguf_adapter=gguf_adapter,
            questions=questions,
            n_threads=args.threads,
        )

    good = agreement(info.path)
    broken = export_peft_lora_to_gguf(peft_dir, work / "unpermuted.gguf", base_gguf=gguf, permute_qk=False)
    control = agreement(broken.path)
    print(
        f"adapter: r={info.ranks} alpha={info.alpha} tensors={info.tensors} (q/k/v/o + MLP, B ~ N(0, {args.b_std}))"
    )
    print(
        f"{'export':<28} {'top-1 match':>11} {'delta corr mean':>15} {'min':>6} {'base top-1':>10} {'adapter flips':>13}"
    )
    for name, r in (("with Q/K permutation", good), ("without (control)", control)):
        print(
            f"{name:<28} {r.top1_match:>11.3f} {r.delta_corr_mean:>15.4f} {r.delta_corr_min:>6.3f} "
            f"{r.base_top1_match:>10.3f} {r.adapter_flips_top1:>13.3f}"
        )
    print(
        f"hf base ready in {base_s:.1f} s; export {export_s:.2f} s; llama.cpp load with adapter {load_s:.2f} s"
    )
    quick.announce(applied, args.quick)
    print(
        json.dumps(
            {
                **{f"lora_{k}": v for k, v in good.to_dict().items()},
                "control_delta_corr_mean": round(control.delta_corr_mean, 4),
                "control_top1_match": round(control.top1_match, 4),
                "export_s": round(export_s, 3),
                "llamacpp_load_with_adapter_s": round(load_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
