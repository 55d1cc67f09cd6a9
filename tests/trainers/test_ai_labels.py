"""AI-labelled pairs (RLAIF) in the store and the trainers' data, on a real SQLite file: which questions
get labelled, how a pair is stored and marked, what leaves it out (the users' feedback count, the
Dashboard, the preferences export, the reward model) and how it is weighted in DPO's epochs. The
labelling itself with real models runs in tests/trainers/test_cycle.py."""

from __future__ import annotations

from dataclasses import replace

from feedback_store import datasets as ds
from feedback_store.exports import export
from feedback_store.records import AssistantTurn
from feedback_store.summary import summarize
from models.base import GenerationResult, SamplingParams
from trainers.ai_labels import AI_USER, store_pair
from trainers.data import vote_epochs
from trainers.run import TrainRequest, load_examples

RM_LABEL = {"labeler": "reward-model", "reward_model": "/rm", "scores": [0.2, 1.4]}


def chat(store, user: str, question: str, base: int, *, system: str | None = None) -> tuple[int, int]:
    conv = store.create_conversation(user, system_prompt=system)
    asked = store.add_message(conv, "user", question)
    reply = store.add_assistant_message(conv, asked, AssistantTurn(content="Hm.", model_version_id=base))
    return asked, reply


def result(text: str) -> GenerationResult:
    return GenerationResult(
        text=text, prompt="...", prompt_tokens=5, completion_tokens=3, finish_reason="stop",
        params=SamplingParams(seed=1),
    )  # fmt: skip


def test_only_unrated_first_questions_are_offered_newest_first(store):
    base = store.versions.ensure_base("m.gguf").id
    _, rated = chat(store, "ann", "Rated?", base)
    store.feedback.record_feedback(rated, "ann", thumbs=1)
    _, better = chat(store, "ann", "Corrected?", base)
    store.feedback.add_demonstration(better, "ann", "A better answer.")
    old, reply = chat(store, "bob", "Old question?", base, system="Be brief.")
    follow = store.add_message(store.get_message(old).conversation_id, "user", "And then?", parent_id=reply)
    store.add_assistant_message(
        store.get_message(old).conversation_id, follow, AssistantTurn(content="Then.", model_version_id=base)
    )
    conv = store.create_conversation("cy")
    store.add_message(conv, "user", "No reply yet?")
    new, _ = chat(store, "dee", "New question?", base)
    chat(store, "eve", "Excluded user?", base)

    found = ds.unrated_prompts(store, limit=10, excluded_users=frozenset({"eve"}))
    assert [r.message_id for r in found] == [new, old]  # no follow-ups, nothing rated, no reply-less one
    assert found[1].prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Old question?"},
    ]
    assert len(ds.unrated_prompts(store, limit=1)) == 1


def test_a_stored_pair_is_marked_weighted_and_left_out_of_the_users_counts(store, tmp_path):
    base = store.versions.ensure_base("m.gguf").id
    asked, _ = chat(store, "ann", "Name a colour.", base)
    (record,) = ds.unrated_prompts(store, limit=5)
    before = store.runs.feedback_count()
    store_pair(store, record, [result("Red."), result("Blue, I think.")], 1, base, RM_LABEL, AI_USER)

    assert ds.unrated_prompts(store, limit=5) == []  # labelled once
    (pair,) = ds.preference_pairs(store)
    assert (pair.source, pair.user_id, pair.chosen, pair.rejected) == (
        "ai",
        AI_USER,
        "Blue, I think.",
        "Red.",
    )
    assert pair.prompt_message_id != asked  # the pair lives in a copy of the question ...
    copy = store.get_message(pair.prompt_message_id)
    assert store.get_conversation(copy.conversation_id)["user_id"] == "ann"  # ... that the asker owns
    assert store.runs.feedback_count() == before  # not the users' feedback: starts no cycle
    totals = summarize(store, rounds=10).totals
    assert (totals["comparisons"], totals["ai_pairs"]) == (0, 1)
    assert export(store, "preferences", tmp_path / "p.jsonl") == 0  # people's preferences only
    raw = tmp_path / "raw.jsonl"
    export(store, "raw", raw)
    assert '"mode": "ai"' in raw.read_text() and AI_USER in raw.read_text()

    req = TrainRequest(method="dpo", db_path=store.path, data_dir=tmp_path, heldout_fraction=0.0)
    assert load_examples(store, req)[0] == []  # left out unless a weight is given
    (weighted,) = load_examples(store, replace(req, ai_weight=0.5))[0]
    assert weighted.weight == 0.5

    store.conversations.delete_user_data("ann")
    assert ds.preference_pairs(store) == []  # the asker's deletion takes the AI pair too


def test_dpo_epochs_hold_a_light_pair_with_its_weight_as_probability(store):
    base = store.versions.ensure_base("m.gguf").id
    for i in range(4):
        chat(store, f"u{i}", f"Question {i}?", base)
    for record in ds.unrated_prompts(store, limit=10):
        store_pair(store, record, [result("No."), result("Yes.")], 1, base, RM_LABEL, AI_USER)
    pairs = [replace(p, weight=0.25) for p in ds.preference_pairs(store)]
    epochs = vote_epochs(pairs, epochs=400)
    assert 0.2 < len(epochs) / (400 * len(pairs)) < 0.3
    assert all(p.weight == 1.0 for p in epochs)
    assert vote_epochs(pairs, epochs=400) == epochs  # deterministic
