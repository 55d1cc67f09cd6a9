"""The reply service without a model: scripted generations through one round (the streaming check,
failures, Stop, storing), the interleaver's end markers, and the one system-message builder."""

import threading
import time

import pytest

from models.base import Generation, GenerationError, GenerationResult, SamplingParams
from playground.messages import split_system, with_system
from playground.replies import END, Interleaved, Reply, run_round, start_prompt, start_replies, stream_replies
from playground.safety import WITHHELD_WHILE_STREAMING, Safety
from settings import Settings


def scripted(pieces, *, version_id=None, fail=False, delay_s=0.005) -> Generation:
    """A generation that streams ``pieces`` (stopping early when cancelled), then ends or fails."""

    def produce(put, cancel: threading.Event) -> GenerationResult:
        sent = []
        for piece in pieces:
            if cancel.is_set():
                break
            put(piece)
            sent.append(piece)
            time.sleep(delay_s)
        if fail:
            raise GenerationError("the backend broke")
        reason = "cancelled" if cancel.is_set() else "stop"
        return GenerationResult(
            "".join(sent), "PROMPT", 3, len(sent), reason, SamplingParams(), version_id=version_id
        )

    return Generation(produce)


@pytest.fixture
def safety(store, tmp_path):
    rules = tmp_path / "moderation.toml"  # a word the scripted replies can trip
    rules.write_text('[categories.test_block]\nwords = ["paris"]\napplies_to = ["output"]\n')
    return Safety.from_settings(Settings(data_dir=tmp_path), store)


def test_a_round_stops_a_flagged_reply_stores_the_others_and_skips_a_failed_one(store, safety):
    version = store.versions.ensure_base("m.gguf").id
    asked = start_prompt(store, safety, None, "compare", "Capital of France?", "  Be brief. ")
    assert asked.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    replies = start_replies(
        asked.messages,
        [
            lambda _m: scripted(["It ", "is ", "Lyon."], version_id=version),
            lambda _m: scripted(["It is ", "Paris", ", of course", " and more"] * 20, version_id=version),
            lambda _m: scripted(["Hm"], version_id=version, fail=True),
        ],
    )
    seen = list(
        run_round(
            store,
            safety,
            asked.conversation_id,
            asked.message_id,
            replies,
            lambda: [r.display for r in replies],
        )
    )
    assert seen and all("Paris" not in shown for view in seen for shown in view)  # never on screen
    plain, flagged, failed = replies
    assert not plain.stopped and plain.shown == "It is Lyon." and plain.message_id is not None
    assert flagged.stopped and WITHHELD_WHILE_STREAMING in [view[1] for view in seen]
    assert flagged.result.finish_reason == "cancelled" and flagged.message_id is not None
    assert "Reply withheld" in flagged.display and "Paris" not in flagged.display
    assert failed.result is None and failed.message_id is None and "broke" in str(failed.error)
    rows = {m.id: m for m in store.conversation_messages(asked.conversation_id)}
    assert rows[plain.message_id].parent_id == asked.message_id == rows[flagged.message_id].parent_id
    assert (
        rows[flagged.message_id].moderation["action"] == "withheld"
        and "Paris" in rows[flagged.message_id].content
    )
    assert rows[plain.message_id].prompt == "PROMPT" and rows[plain.message_id].model_version_id == version


def test_stop_stores_what_was_generated(store, safety):
    conv = store.create_conversation("u")
    parent = store.add_message(conv, "user", "Count.")
    reply = Reply(scripted([f"{i} " for i in range(1000)], delay_s=0.01))
    steps = run_round(store, safety, conv, parent, [reply], lambda: reply.text)
    assert next(steps)  # the first piece is shown at once
    steps.close()  # what Gradio does on Stop
    assert reply.result.finish_reason == "cancelled" and reply.message_id is not None
    assert store.get_message(reply.message_id).content == reply.result.text != ""


def test_renders_are_throttled_but_the_first_is_never_held_back(store, safety):
    reply = Reply(scripted(list("abcdefgh")))
    shown = list(stream_replies(safety, [reply], lambda: reply.text, render_interval_s=60))
    assert shown == ["a"] and reply.result.text == "abcdefgh"


def test_a_reply_that_cannot_start_cancels_those_already_started():
    started = []

    def start(_messages):
        started.append(scripted(["x"] * 1000, delay_s=0.01))
        return started[-1]

    def refuse(_messages):
        raise ValueError("no such version")

    with pytest.raises(ValueError, match="no such version"):
        start_replies([], [start, refuse])
    assert started[0].cancelled


def test_interleaved_marks_each_sources_end():
    def failing():
        yield "b0"
        raise RuntimeError("boom")

    merged = Interleaved([iter(["a0", "a1"]), failing(), iter([])])
    got = list(merged.with_ends())
    assert merged.join(5)
    assert sorted(i for i, item in got if item is END) == [0, 1, 2]
    assert [item for i, item in got if i == 0] == ["a0", "a1", END]  # each source's end comes last
    assert [item for i, item in got if i == 1] == ["b0", END]  # a failing source just ends


def test_one_system_message_builder():
    user = {"role": "user", "content": "hi"}
    assert with_system("  Be brief.\n", [user]) == [{"role": "system", "content": "Be brief."}, user]
    assert with_system("   ", [user]) == [user] == with_system(None, [user])
    assert split_system(with_system("S", [user])) == ("S", [user])
    assert split_system([user]) == (None, [user])
