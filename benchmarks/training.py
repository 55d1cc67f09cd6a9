"""Seconds per step and peak RSS of each training method through our wrappers, next to a bare TRL script
doing the same step, in the same run, on the embedded model (batch 4, sequences of ~256 tokens, LoRA r=8).

    python -m benchmarks.training [--steps 5] [--methods reward dpo kto sft rl best_of_n]

Every measurement runs in its own fresh process (so peak RSS is that method's alone). Seconds per step
are the median over steps after the first (warm-up). Last line: a JSON object with per-method
``s_per_step`` (ours), ``bare_s_per_step``, ``ratio_vs_bare_trl`` and ``peak_rss_mb``.
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
from pathlib import Path

METHODS = ("reward", "dpo", "kto", "sft", "rl", "best_of_n")
MAX_LENGTH = 256
BATCH = 4
R = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FILLER = (
    "The answer should be careful, complete and kind, explain each step, give an example, "
    "and end with a short summary that repeats the key point in plain words. "
)


def long_pairs(n: int):
    """Pairs whose prompt+reply are about 256 tokens, like real chat turns."""
    from trainers.data import PreferencePair

    pairs = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question {i}: explain how a bicycle gear works. " + FILLER}]
        chosen = "Happy to help. " + FILLER * 4
        rejected = "No. " + FILLER * 4
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


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives exec, so a child would report
    its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one measurement (runs in a child process) -----------------------------------------------------------
def run_ours(method: str, base: str, steps: int, work: Path, reward_adapter: str) -> list[float]:
    from trainers.best_of_n import BestOfNConfig, train_best_of_n
    from trainers.data import Demonstration, PromptRecord, UnpairedExample
    from trainers.dpo import DPOTrainConfig, train_dpo
    from trainers.kto import KTOTrainConfig, train_kto
    from trainers.reward import RewardTrainConfig, train_reward_model
    from trainers.rl import RLTrainConfig, train_rl
    from trainers.sft import SFTTrainConfig, train_sft

    pairs = long_pairs(BATCH * steps)
    common = dict(
        output_dir=str(work / f"ours-{method}-{os.getpid()}"),
        base_model_dir=base,
        max_steps=steps,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
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
                **common, reward_adapter=reward_adapter, num_generations=BATCH, max_completion_length=64
            ),
            [PromptRecord(p.prompt) for p in pairs],
            callbacks=[timer],
        )
    elif method == "best_of_n":
        train_best_of_n(
            BestOfNConfig(**common, reward_adapter=reward_adapter, n=BATCH, max_new_tokens=64),
            [PromptRecord(p.prompt) for p in pairs[:BATCH]],
            callbacks=[timer],
        )
    return timer.durations


def run_bare(method: str, base: str, steps: int, work: Path, reward_adapter: str) -> list[float]:
    """The same step written directly against TRL, transformers and PEFT (what a user would script)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    pairs = long_pairs(BATCH * steps)
    tok = AutoTokenizer.from_pretrained(base)
    common = dict(
        output_dir=str(work / f"bare-{method}"),
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        max_steps=steps,
        per_device_train_batch_size=BATCH,
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

    if method == "reward":
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        RewardTrainer(
            model=model,
            args=RewardConfig(**common, max_length=MAX_LENGTH, learning_rate=1e-4),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="SEQ_CLS", modules_to_save=["score"], **lora),
        ).train()
    elif method == "dpo":
        from trl import DPOConfig, DPOTrainer

        DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(base),
            args=DPOConfig(**common, max_length=MAX_LENGTH),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()
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
        KTOTrainer(
            model=AutoModelForCausalLM.from_pretrained(base),
            args=KTOConfig(**common, max_length=MAX_LENGTH),
            train_dataset=Dataset.from_list(kto_rows),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()
    elif method in ("sft", "best_of_n"):
        from trl import SFTConfig, SFTTrainer

        if method == "best_of_n":  # sample n per prompt, score with the reward model, keep the best
            policy = AutoModelForCausalLM.from_pretrained(base).eval()
            rm = rm_model().eval()
            tok.padding_side = "left"
            sft_rows = []
            for r in rows[:BATCH]:
                text = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
                enc = tok([text] * BATCH, return_tensors="pt", add_special_tokens=False)
                out = policy.generate(
                    **enc, max_new_tokens=64, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id
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
        SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(base),
            args=SFTConfig(**common, max_length=MAX_LENGTH),
            train_dataset=Dataset.from_list(sft_rows),
            processing_class=tok,
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()
    elif method == "rl":
        from trl import RLOOConfig, RLOOTrainer

        RLOOTrainer(
            model=AutoModelForCausalLM.from_pretrained(base),
            reward_funcs=[rm_model()],
            args=RLOOConfig(**common, num_generations=BATCH, max_completion_length=64),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
            processing_class=tok,
            reward_processing_classes=[tok],
            callbacks=[timer],
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        ).train()
    return timer.durations


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    runner = run_ours if args.child == "ours" else run_bare
    durations = runner(args.method, args.base, args.steps, Path(args.work), args.reward_adapter)
    steady = durations[1:] or durations
    print(
        json.dumps(
            {"s_per_step": statistics.median(steady), "steps": len(durations), "peak_rss_mb": _peak_rss_mb()}
        )
    )


def measure(kind: str, method: str, base: str, steps: int, work: Path, reward_adapter: str) -> dict:
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
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--repeats", type=int, default=2, help="alternate ours/bare this many times; keep the fastest"
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--child", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--reward-adapter", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from models.embedded import embedded_model_path
    from models.hf_base import ensure_hf_base

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    base = str(ensure_hf_base(embedded_model_path(), work / "base"))
    reward_adapter = ""
    if {"rl", "best_of_n"} & set(args.methods):  # a reward model for the methods that need one
        from trainers.reward import RewardTrainConfig, train_reward_model

        rm = train_reward_model(
            RewardTrainConfig(
                output_dir=str(work / "rm"),
                base_model_dir=base,
                max_steps=2,
                max_length=MAX_LENGTH,
                min_examples=1,
            ),
            long_pairs(8),
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
                runs[kind].append(measure(kind, method, base, args.steps, work, reward_adapter))
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
    print(json.dumps(results))


if __name__ == "__main__":
    main()
