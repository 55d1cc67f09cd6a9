"""The replay term: its data is disjoint from what the gate and the benchmark measure (normalized text
and near-duplicates), its batches cover the completion only, and it changes a trainer's loss by
exactly ``ptx_coef`` times the replay NLL."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from tests.conftest import ROOT
from trainers import replay
from trainers.gate import FACTS, HARMFUL_REQUESTS

TASKS = ROOT / "simulation" / "tasks"
STOP = set(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "many",
        "much",
        "for",
        "by",
        "with",
        "and",
        "or",
        "from",
        "this",
        "that",
        "it",
        "its",
        "as",
        "your",
        "you",
        "my",
        "i",
        "me",
        "we",
        "our",
        "their",
        "there",
        "called",
        "most",
        "main",
    ]
)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def content_words(text: str) -> set[str]:
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in normalize(text).split() if w not in STOP}


def near_duplicate(a: str, b: str) -> bool:
    """The same text once normalized, or the same question reworded: one's content words contain the
    other's, or they share three quarters of them ("How do bees make honey?" ~ "What do bees make?")."""
    if normalize(a) == normalize(b):
        return True
    ca, cb = content_words(a), content_words(b)
    if not ca or not cb:
        return False
    return ca <= cb or cb <= ca or len(ca & cb) / len(ca | cb) >= 0.75


def benchmark_prompts() -> list[str]:
    return [
        json.loads(line)["prompt"]
        for name in ("loop_capability", "loop_facts", "loop_sentiment")
        for line in (TASKS / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]


def test_near_duplicate_detection():
    assert near_duplicate("What is the capital of France?", "what is the CAPITAL of france")
    assert near_duplicate("How do bees make honey?", "What do bees make?")
    assert near_duplicate("How many continents are there on Earth?", "How many continents are there?")
    assert not near_duplicate("What is the capital of Canada?", "What is the capital of France?")


def test_the_replay_pool_is_disjoint_from_what_the_gate_and_the_benchmark_measure():
    measured = [f.question for f in FACTS] + list(HARMFUL_REQUESTS) + benchmark_prompts()
    pool = replay.pool_prompts()
    assert len(pool) >= 100 and len({normalize(p) for p in pool}) == len(pool)
    clashes = [(p, m) for p in pool for m in measured if near_duplicate(p, m)]
    assert clashes == []


def test_the_gate_facts_are_not_the_benchmarks_questions():
    """Else the benchmark's capability score and the gate would measure the same answers."""
    bench = benchmark_prompts()
    assert [(f.question, b) for f in FACTS for b in bench if near_duplicate(f.question, b)] == []


def test_the_replay_text_does_not_state_measured_facts():
    """No measured question's answer appears with the question's subject in one paragraph."""
    measured = [(f.question, f.answers) for f in FACTS]
    for line in (TASKS / "loop_capability.jsonl").read_text().splitlines():
        row = json.loads(line)
        measured.append((row["prompt"], tuple(row["answers"])))
    for paragraph in replay.text_paragraphs():
        words = content_words(paragraph)
        for question, answers in measured:
            subject = content_words(question) - {"capital", "color", "largest", "animal", "known", "name"}
            if subject and subject <= words:
                assert not any(re.search(rf"\b{re.escape(a)}\b", paragraph, re.I) for a in answers), question


@pytest.fixture(scope="module")
def tokenizer(hf_base_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_base_dir)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    """A randomly initialised two-layer llama with the real vocabulary: the loss arithmetic, fast."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(config).eval()


def test_replay_labels_cover_the_completion_only(tokenizer):
    prompt = [{"role": "user", "content": "Explain how a rainbow forms."}]
    ids, labels = replay.tokenize(
        replay.ReplayExample("Sunlight bends in raindrops.", prompt), tokenizer, 256
    )
    answer = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(answer).startswith("Sunlight bends in raindrops.")
    assert labels[: len(ids) - len(answer)] == [-100] * (len(ids) - len(answer))
    cut = replay.tokenize(replay.ReplayExample("Sunlight bends", prompt, ended=False), tokenizer, 256)
    assert tokenizer.decode([i for i, la in zip(*cut, strict=True) if la != -100]) == "Sunlight bends"
    text_ids, text_labels = replay.tokenize(replay.ReplayExample("Plain prose here."), tokenizer, 256)
    assert text_labels[0] == -100 and text_labels[1:] == text_ids[1:]


def test_the_replay_term_adds_ptx_coef_times_the_nll(tiny_model, tokenizer):
    import torch

    examples = [
        replay.ReplayExample("A short answer.", [{"role": "user", "content": "Say something short."}]),
        replay.ReplayExample("Plain text to model."),
    ]
    sequences = [replay.tokenize(e, tokenizer, 64) for e in examples]

    class MethodLoss:  # stands for a TRL trainer: its own loss is a constant
        loss_is_scaled_for_ga = False
        current_gradient_accumulation_steps = 1

        def __init__(self, **kwargs):
            self._metrics = {"train": {"replay_nll": []}}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return torch.tensor(1.5)

    trainer_class = replay.with_replay(MethodLoss)
    assert replay.with_replay(MethodLoss) is trainer_class  # one subclass per trainer class
    batches = replay.ReplayBatches(sequences, batch_size=2, pad_id=tokenizer.pad_token_id)
    trainer = trainer_class(replay=batches, ptx_coef=0.3)
    tiny_model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(tiny_model, {})
        # the same batch again, computed by hand: mean NLL over the replayed tokens only
        batch = replay.ReplayBatches(sequences, batch_size=2, pad_id=tokenizer.pad_token_id).next_batch()
        logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        mask = targets != -100
        nll = -(logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * mask).sum() / mask.sum()
    tiny_model.eval()
    assert float(loss) == pytest.approx(1.5 + 0.3 * float(nll), rel=1e-4)
    assert trainer._metrics["train"]["replay_nll"] == [pytest.approx(float(nll), rel=1e-4)]
    off = trainer_class(replay=None, ptx_coef=0.3)
    assert float(off.compute_loss(tiny_model, {})) == 1.5


def test_replay_batches_cycle_through_every_example():
    batches = replay.ReplayBatches(
        [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5]), ([6, 7], [-100, 7])], 2, 0
    )
    seen = [tuple(row[:2]) for _ in range(3) for row in batches.next_batch()["input_ids"].tolist()]
    assert {s[0] for s in seen} == {1, 4, 6} and len(seen) == 6


def test_the_base_models_answers_are_made_once_for_data_dirs_that_share_its_copy(
    tmp_path, monkeypatch, store
):
    """Real greedy answers of the embedded model (two pool prompts, to keep it short)."""
    import shutil

    from models.embedded import embedded_model_path

    monkeypatch.setattr(replay, "POOL_PROMPTS", 2)
    shared = tmp_path / "shared-hf-base"
    shared.mkdir()
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        (d / "hf-base").symlink_to(shared, target_is_directory=True)
    base = store.versions.ensure_base(embedded_model_path().name)  # as the server names it

    first = replay.prepare("answers", dirs[0], version=base, threads=1)
    made = first.stat().st_mtime_ns
    again = replay.prepare("answers", dirs[1], version=base, threads=1)
    assert again.resolve() == first.resolve() and again.stat().st_mtime_ns == made  # not generated again
    assert first.resolve().parent == shared.resolve() / "replay" and len(replay.read_examples(first)) == 2
    assert all(e.prompt[-1]["role"] == "user" and e.completion for e in replay.read_examples(first))

    # another system prompt, or another model file, is another set of answers
    other = replay.prepare("answers", dirs[0], version=base, system_prompt="Be brief.", threads=1)
    assert other != first and replay.read_examples(other)[0].prompt[0] == {
        "role": "system",
        "content": "Be brief.",
    }
    copy = tmp_path / "copy.gguf"
    shutil.copy(embedded_model_path(), copy)  # the same weights installed elsewhere: the same answers
    assert replay.model_identity(str(copy)) == replay.model_identity(None)
    with copy.open("ab") as f:
        f.write(b"\0")  # other weights
    assert replay.model_identity(str(copy)) != replay.model_identity(None)
