"""Seconds per step and peak RSS of each training method through our wrappers, next to a bare TRL script
doing the same step, in the same run, on the embedded model (batch 4, sequences of ~256 tokens, LoRA r=8).

    python -m benchmarks.training [--steps 5] [--methods reward dpo kto sft rl best_of_n] [--quick]

Every measurement runs in its own fresh process (so peak RSS is that method's alone). Seconds per step
are the median over steps after the first (warm-up). Last line: a JSON object with per-method
``s_per_step`` (ours), ``bare_s_per_step``, ``ratio_vs_bare_trl`` and ``peak_rss_mb``.

``--quick`` runs every method for one step of batch 2 at 64 tokens (8 generated tokens for RL and
best-of-n), once each, all in this process (peak RSS is reset before each measurement, so it is roughly
that measurement's, on top of what the process already holds), with one OpenMP thread that sleeps
while it waits and the dequantized base in the quick runs' shared temporary folder unless
``--data-dir`` is given. It checks the command works; its figures are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ROOT, quick

METHODS = ("reward", "dpo", "kto", "sft", "rl", "best_of_n")
MAX_LENGTH = 256
BATCH = 4
R = 8
# Everything at its smallest: one step, batch 2, 64 tokens, in one process (12 fresh processes would
# spend a minute importing torch), a one-step reward model.
QUICK = {
    "steps": 1,
    "repeats": 1,
    "batch": 2,
    "max_length": 64,
    "completion_tokens": 8,
    "reward_steps": 1,
    "in_process": True,
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FILLER = (
    "The answer should be careful, complete and kind, explain each step, give an example, "
    "and end with a short summary that repeats the key point in plain words. "
)


@dataclass(frozen=True)
class Sizes:
    batch: int = BATCH
    max_length: int = MAX_LENGTH
    completion_tokens: int = 64  # generated per sample by RL and best-of-n


def long_pairs(n: int, max_length: int = MAX_LENGTH):
    """Pairs whose prompt+reply are about 256 tokens, like real chat turns; under 64 tokens when
    ``max_length`` is shorter than that (the trainers drop examples that do not fit, not cut them)."""
    from trainers.data import PreferencePair

    long = max_length >= MAX_LENGTH
    pairs = []
    for i in range(n):
        question = f"Question {i}: explain how a bicycle gear works. " + (FILLER if long else "")
        prompt = [{"role": "user", "content": question}]
        chosen = "Happy to help. " + (FILLER * 4 if long else "Gears trade force for speed.")
        rejected = "No. " + (FILLER * 4 if long else "Figure it out.")
        pairs.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected))
    return pairs


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self._t)

    return StepTimer()


def _reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux: writing 5 to clear_refs), for in-process runs."""
    import contextlib
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives exec, so a child would report
    its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one measurement (runs in a child process) -----------------------------------------------------------
def run_ours(
    method: str, base: str, steps: int, work: Path, reward_adapter: str, sizes: Sizes = Sizes()
) -> list[float]:
    from trainers.best_of_n import BestOfNConfig, train_best_of_n
    from trainers.data import Demonstration, PromptRecord, UnpairedExample
    from trainers.dpo import DPOTrainConfig, train_dpo
    from trainers.kto import KTOTrainConfig, train_kto
    from trainers.reward import RewardTrainConfig, train_reward_model
    from trainers.rl import RLTrainConfig, train_rl
    from trainers.sft import SFTTrainConfig, train_sft

    batch = sizes.batch
    pairs = long_pairs(batch * steps, sizes.max_length)
    common = dict(
        output_dir=str(work / f"ours-{method}-{os.getpid()}"),
        base_model_dir=base,
        max_steps=steps,
        batch_size=batch,
        max_length=sizes.max_length,
        lora_r=R,
        lora_alpha=2 * R,
        min_examples=1,
    )
    timer = step_timer()
    if method == "reward":
        train_reward_model(RewardTrainConfig(**common), pairs, callbacks=[timer])
    elif method == "dpo":
        train_dpo(DPOTrainConfig(**common), pairs, callbacks=[timer])
    elif method == "kto":
        examples = [
            UnpairedExample(p.prompt, p.chosen if i % 2 else p.rejected, bool(i % 2))
            for i, p in enumerate(pairs)
        ]
        train_kto(KTOTrainConfig(**common, min_per_label=1), examples, callbacks=[timer])
    elif method == "sft":
        train_sft(
            SFTTrainConfig(**common), [Demonstration(p.prompt, p.chosen) for p in pairs], callbacks=[timer]
        )
    elif method == "rl":
        train_rl(
            RLTrainConfig(
                **common,
                reward_adapter=reward_adapter,
                num_generations=batch,
                max_completion_length=sizes.completion_tokens,
            ),
            [PromptRecord(p.prompt) for p in pairs],
            callbacks=[timer],
        )
    elif method == "best_of_n":
        train_best_of_n(
            BestOfNConfig(
                **common, reward_adapter=reward_adapter, n=batch, max_new_tokens=sizes.completion_tokens
            ),
            [PromptRecord(p.prompt) for p in pairs[:batch]],
            callbacks=[timer],
        )
    return timer.durations


def run_bare(
    method: str, base: str, steps: int, work: Path, reward_adapter: str, sizes: Sizes = Sizes()
) -> list[float]:
    """The same step written directly against TRL, transformers and PEFT (what a user would script)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    batch, max_length, completion = sizes.batch, sizes.max_length, sizes.completion_tokens
    pairs = long_pairs(batch * steps, sizes.max_length)
    tok = AutoTokenizer.from_pretrained(base)
    common = dict(
        output_dir=str(work / f"bare-{method}"),
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        max_steps=steps,
        per_device_train_batch_size=batch,
        logging_steps=1,
    )
    lora = dict(r=R, lora_alpha=2 * R, lora_dropout=0.05, target_modules=TARGETS)
    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    timer = step_timer()

    def rm_model():
        m = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        m.config.pad_token_id = tok.pad_token_id
        return PeftModel.from_pretrained(m, reward_adapter).merge_and_unload()

    def train_policy(trainer_class, config_class, data: list[dict]) -> None:
        """DPO, KTO and SFT: a LoRA on the causal LM, trained on ``data``."""
        trainer_class(
            model=AutoModelForCausalLM.from_pretrained(base),
            args=config_class(**common, max_length=max_length),
            train_dataset=Dataset.from_list(data),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()

    if method == "reward":
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        RewardTrainer(
            model=model,
            args=RewardConfig(**common, max_length=max_length, learning_rate=1e-4),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="SEQ_CLS", modules_to_save=["score"], **lora),
        ).train()
    elif method == "dpo":
        from trl import DPOConfig, DPOTrainer

        train_policy(DPOTrainer, DPOConfig, rows)
    elif method == "kto":
        from trl import KTOConfig, KTOTrainer

        kto_rows = [
            {
                "prompt": r["prompt"],
                "completion": r["chosen"] if i % 2 else r["rejected"],
                "label": bool(i % 2),
            }
            for i, r in enumerate(rows)
        ]
        train_policy(KTOTrainer, KTOConfig, kto_rows)
    elif method in ("sft", "best_of_n"):
        from trl import SFTConfig, SFTTrainer

        if method == "best_of_n":  # sample n per prompt, score with the reward model, keep the best
            policy = AutoModelForCausalLM.from_pretrained(base).eval()
            rm = rm_model().eval()
            tok.padding_side = "left"
            sft_rows = []
            for r in rows[:batch]:
                text = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
                enc = tok([text] * batch, return_tensors="pt", add_special_tokens=False)
                out = policy.generate(
                    **enc, max_new_tokens=completion, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id
                )
                replies = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                scores = []
                for reply in replies:
                    ids = tok.apply_chat_template(
                        [*r["prompt"], {"role": "assistant", "content": reply}],
                        tokenize=True,
                        return_dict=True,
                        return_tensors="pt",
                    )
                    with torch.no_grad():
                        scores.append(float(rm(**ids).logits[0, 0]))
                sft_rows.append(
                    {
                        "prompt": r["prompt"],
                        "completion": [{"role": "assistant", "content": replies[scores.index(max(scores))]}],
                    }
                )
            tok.padding_side = "right"
            del policy, rm
        else:
            sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
        train_policy(SFTTrainer, SFTConfig, sft_rows)
    elif method == "rl":
        from trl import RLOOConfig, RLOOTrainer

        RLOOTrainer(
            model=AutoModelForCausalLM.from_pretrained(base),
            reward_funcs=[rm_model()],
            args=RLOOConfig(**common, num_generations=batch, max_completion_length=completion),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
            processing_class=tok,
            reward_processing_classes=[tok],
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()
    return timer.durations


def one_measurement(
    kind: str, method: str, base: str, steps: int, work: Path, reward_adapter: str, sizes: Sizes
) -> dict:
    import torch

    torch.manual_seed(0)
    runner = run_ours if kind == "ours" else run_bare
    durations = runner(method, base, steps, work, reward_adapter, sizes)
    steady = durations[1:] or durations
    return {"s_per_step": statistics.median(steady), "steps": len(durations), "peak_rss_mb": _peak_rss_mb()}


def child(args: argparse.Namespace) -> None:
    sizes = Sizes(args.batch, args.max_length, args.completion_tokens)
    print(json.dumps(one_measurement(args.child, args.method, args.base, args.steps, Path(args.work),
                                     args.reward_adapter, sizes)))  # fmt: skip


def measure(
    kind: str,
    method: str,
    base: str,
    steps: int,
    work: Path,
    reward_adapter: str,
    sizes: Sizes = Sizes(),
    in_process: bool = False,
) -> dict:
    if in_process:
        _reset_peak_rss()
        return one_measurement(kind, method, base, steps, work, reward_adapter, sizes)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.training",
        "--child",
        kind,
        "--method",
        method,
        "--base",
        base,
        "--steps",
        str(steps),
        "--work",
        str(work),
        "--reward-adapter",
        reward_adapter,
        "--batch",
        str(sizes.batch),
        "--max-length",
        str(sizes.max_length),
        "--completion-tokens",
        str(sizes.completion_tokens),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--repeats", type=int, default=2, help="alternate ours/bare this many times; keep the fastest"
    )
    ap.add_argument("--reward-steps", type=int, default=2, help="steps of the reward model rl/best_of_n use")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--child", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--reward-adapter", default="", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=BATCH, help=f"examples per step (default {BATCH})")
    ap.add_argument(
        "--max-length", type=int, default=MAX_LENGTH, help=f"tokens per example (default {MAX_LENGTH})"
    )
    ap.add_argument(
        "--completion-tokens", type=int, default=64, help="tokens generated per sample by rl and best_of_n"
    )
    ap.add_argument(
        "--in-process", action="store_true", help="measure in this process, not a fresh one per measurement"
    )
    ap.add_argument("--data-dir", help="cache the dequantized base in DATA_DIR/hf-base (default: a temp dir)")
    quick.add_quick_flag(ap)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    applied = quick.apply_quick(ap, args, QUICK)
    if args.quick:
        quick.calm_threads(applied)  # before torch is imported
    quick.announce(applied, args.quick)
    sizes = Sizes(args.batch, args.max_length, args.completion_tokens)

    from models.embedded import embedded_model_path
    from models.hf_base import ensure_hf_base

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    if args.quick:
        cache = quick.hf_cache(args.data_dir)
    else:
        cache = Path(args.data_dir) / "hf-base" if args.data_dir else work / "base"
    base = str(ensure_hf_base(embedded_model_path(), cache))
    reward_adapter = ""
    if {"rl", "best_of_n"} & set(args.methods):  # a reward model for the methods that need one
        from trainers.reward import RewardTrainConfig, train_reward_model

        rm = train_reward_model(
            RewardTrainConfig(
                output_dir=str(work / "rm"),
                base_model_dir=base,
                max_steps=args.reward_steps,
                batch_size=sizes.batch,
                max_length=sizes.max_length,
                min_examples=1,
            ),
            long_pairs(2 * sizes.batch, sizes.max_length),
        )
        reward_adapter = str(rm.adapter_dir)

    results = {}
    print(
        f"{'method':<11}{'ours s/step':>12}{'bare s/step':>12}{'ratio':>8}{'ours RSS MB':>13}{'bare RSS MB':>13}"
    )
    for method in args.methods:
        # Alternating runs and keeping each side's fastest cancels most of the noise of a shared machine.
        runs = {"ours": [], "bare": []}
        for _ in range(args.repeats):
            for kind in ("ours", "bare"):
                runs[kind].append(
                    measure(kind, method, base, args.steps, work, reward_adapter, sizes, args.in_process)
                )
        ours = min(runs["ours"], key=lambda r: r["s_per_step"])
        bare = min(runs["bare"], key=lambda r: r["s_per_step"])
        ratio = ours["s_per_step"] / bare["s_per_step"]
        results[method] = {
            "s_per_step": round(ours["s_per_step"], 3),
            "bare_s_per_step": round(bare["s_per_step"], 3),
            "ratio_vs_bare_trl": round(ratio, 3),
            "peak_rss_mb": round(ours["peak_rss_mb"]),
            "bare_peak_rss_mb": round(bare["peak_rss_mb"]),
        }
        print(
            f"{method:<11}{ours['s_per_step']:>12.2f}{bare['s_per_step']:>12.2f}{ratio:>8.2f}"
            f"{ours['peak_rss_mb']:>13.0f}{bare['peak_rss_mb']:>13.0f}",
            flush=True,
        )
    quick.announce(applied, args.quick)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
