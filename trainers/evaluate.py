"""Measurements of a policy against its reference: sequence log-probabilities, preference accuracy of the
implicit reward, a Monte-Carlo KL estimate on held-out prompts, and sampling.

Tokenization mirrors TRL's: the prompt rendered with the generation prompt, the completion = the rest of
the full conversation rendered by the same chat template (so it ends with the end-of-turn token).

Also a command for measuring saved adapters in a fresh process, as their user loads them (the policy
tests use it): a JSON line for the base, then one per ``--adapter`` (the base is loaded once):

    python -m trainers.evaluate margins --base DIR [--adapter DIR ...] --pairs pairs.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from trainers.data import Messages, PreferencePair


def _completion_ids(tokenizer, prompt: Messages, completion: str) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer.apply_chat_template(
        list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=True
    )["input_ids"]
    n = 0
    while n < min(len(prompt_ids), len(full)) and prompt_ids[n] == full[n]:
        n += 1
    return full[:n], full[n:]


@torch.no_grad()
def sequence_logprobs(
    model, tokenizer, prompts: Sequence[Messages], completions: Sequence[str], max_length: int = 512
) -> list[float]:
    """Sum of log p(completion tokens | prompt) for each pair (one forward pass per pair)."""
    device = next(model.parameters()).device
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        p_ids, c_ids = _completion_ids(tokenizer, prompt, completion)
        ids = (p_ids + c_ids)[-max_length:]
        n_completion = min(len(c_ids), len(ids) - 1)
        input_ids = torch.tensor([ids], device=device)
        logits = model(input_ids=input_ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        targets = input_ids[0, 1:]
        token_logp = logp.gather(1, targets[:, None]).squeeze(1)
        out.append(float(token_logp[-n_completion:].sum()) if n_completion > 0 else 0.0)
    return out


@contextlib.contextmanager
def reference_of(model) -> Iterator[Any]:
    """The reference policy: the same model with its LoRA adapter disabled (the base)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def logprob_margins(model, tokenizer, pairs: Sequence[PreferencePair]) -> list[float]:
    """log p(chosen) - log p(rejected) per pair under ``model``."""
    prompts = [p.prompt for p in pairs]
    chosen = sequence_logprobs(model, tokenizer, prompts, [p.chosen for p in pairs])
    rejected = sequence_logprobs(model, tokenizer, prompts, [p.rejected for p in pairs])
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def implicit_margins(model, tokenizer, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
    """Per pair: the implicit reward margin log(pi/pi_ref)(chosen) - log(pi/pi_ref)(rejected), and the
    policy's own log-probability margin. Without an adapter both margins are the base's: implicit 0."""
    policy = logprob_margins(model, tokenizer, pairs)
    if not hasattr(model, "disable_adapter"):
        return [0.0] * len(policy), policy
    with reference_of(model) as ref:
        reference = logprob_margins(ref, tokenizer, pairs)
    return [p - r for p, r in zip(policy, reference, strict=True)], policy


def preference_accuracy(model, tokenizer, pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Does the policy's implicit reward log(pi/pi_ref) prefer the chosen reply? (DPO's reward accuracy)."""
    implicit, policy = implicit_margins(model, tokenizer, pairs)
    reference = [p - i for p, i in zip(policy, implicit, strict=True)]
    return {
        "preference_accuracy": sum(m > 0 for m in implicit) / len(implicit),
        "implicit_reward_margin": sum(implicit) / len(implicit),
        "logprob_margin": sum(policy) / len(policy),
        "reference_logprob_margin": sum(reference) / len(reference),
    }


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence[Messages],
    *,
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """``n`` sampled replies per prompt with HF generate (left padding, batched); ``on_batch(done,
    total)`` after each batch, for a progress report."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False) for p in prompts
    ]
    flat = [t for t in texts for _ in range(n)]
    replies: list[str] = []
    try:
        for start in range(0, len(flat), batch_size):
            enc = tokenizer(
                flat[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            output = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=top_p,
                top_k=0,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = output[:, enc["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            if on_batch is not None:
                on_batch(len(replies), len(flat))
    finally:
        tokenizer.padding_side = old_side
    return [replies[i * n : (i + 1) * n] for i in range(len(prompts))]


def kl_per_sample(model, tokenizer, prompts: Sequence[Messages], samples: Sequence[str]) -> list[float]:
    """log pi(y) - log pi_ref(y) for each of pi's own samples y (their mean estimates the KL)."""
    policy = sequence_logprobs(model, tokenizer, prompts, samples)
    with reference_of(model) as ref:
        reference = sequence_logprobs(ref, tokenizer, prompts, samples)
    return [p - r for p, r in zip(policy, reference, strict=True)]


def kl_to_reference(model, tokenizer, prompts: Sequence[Messages], samples: Sequence[str]) -> float:
    """Monte-Carlo KL(pi || pi_ref) in nats per reply: mean of log pi(y) - log pi_ref(y) over pi's own samples."""
    if not samples:
        return 0.0
    values = kl_per_sample(model, tokenizer, prompts, samples)
    return sum(values) / len(values)


def load_policy_for_eval(base_model_dir: str | Path, adapter_dir: str | Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    return model, tokenizer


def read_pairs_jsonl(path: str | Path) -> list[PreferencePair]:
    pairs = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            pairs.append(PreferencePair(prompt=d["prompt"], chosen=d["chosen"], rejected=d["rejected"]))
    return pairs


def write_pairs_jsonl(pairs: Sequence[PreferencePair], path: str | Path) -> None:
    Path(path).write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p in pairs
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainers.evaluate", description="Measure adapters.")
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "margins", help="mean log p(chosen) - log p(rejected) over pairs: a JSON line per model"
    )
    m.add_argument("--base", required=True)
    m.add_argument("--adapter", action="append", default=[], help="an adapter to measure; repeatable")
    m.add_argument("--pairs", required=True)
    args = ap.parse_args(argv)
    pairs = read_pairs_jsonl(args.pairs)
    if not pairs:
        ap.error(f"{args.pairs} holds no preference pairs")
    model, tokenizer = load_policy_for_eval(args.base)

    def report(adapter: str | None) -> None:
        margins = logprob_margins(model, tokenizer, pairs)
        line = {"adapter": adapter, "mean_margin": sum(margins) / len(margins), "margins": margins}
        print(json.dumps(line), flush=True)

    report(None)
    if args.adapter:
        from peft import PeftModel
    for i, adapter in enumerate(args.adapter):
        name = f"adapter{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, adapter, adapter_name=name).eval()
        else:
            model.load_adapter(adapter, adapter_name=name)
        model.set_adapter(name)
        report(adapter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
