"""The serving benchmark finds the app's chat event and fills its inputs from a Gradio config alone, so
changes to the Chat tab's controls do not break it."""

from __future__ import annotations

import pytest

from benchmarks.gradio_chat import ChatEventNotFound, find_chat_event, reply_text


def comp(id_, type_, label=None, value=None, skip_api=False):
    return {"id": id_, "type": type_, "props": {"label": label, "value": value}, "skip_api": skip_api}


def dep(id_, api_name, targets, inputs, outputs, generator=False, after=None):
    return {
        "id": id_,
        "api_name": api_name,
        "targets": targets,
        "inputs": inputs,
        "outputs": outputs,
        "types": {"generator": generator, "cancel": False},
        "trigger_after": after,
        "backend_fn": True,
    }


def config(extra_controls=()):
    components = [
        comp(1, "state", skip_api=True),
        comp(2, "chatbot", "Chat"),
        comp(3, "textbox"),  # the message box: no label
        comp(4, "textbox", "System prompt", "default system"),
        comp(5, "slider", "Temperature (0 = greedy)", 0.7),
        comp(6, "slider", "Max new tokens", 256),
        comp(7, "slider", "Top-p", 0.9),
        comp(8, "slider", "Repetition penalty", 1.2),
        comp(9, "dropdown", "Preset", "plain"),
        comp(20, "textbox"),  # another tab's box, streaming into two chatbots
        comp(21, "chatbot", "Model A"),
        comp(22, "chatbot", "Model B"),
        *extra_controls,
    ]
    controls = [4, *(c["id"] for c in extra_controls), 9, 8, 7, 6, 5]  # any order
    return {
        "components": components,
        "dependencies": [
            dep(0, "run", [[20, "submit"]], [20], [21, 22], generator=True),
            dep(1, "submit", [[3, "submit"]], [3, 1, 4], [3, 2, 1]),
            dep(2, "respond", [[None, "then"]], [1, *controls], [2, 1], generator=True, after=1),
        ],
    }


def test_finds_the_chain_and_fills_inputs_by_label_whatever_the_order():
    chat = find_chat_event(config([comp(10, "number", "Seed", -1), comp(11, "checkbox", "New thing", True)]))
    assert [e.api_name for e in chat.chain] == ["submit", "respond"]
    assert chat.message_id == 3 and chat.chatbot_id == 2
    assert chat.values(chat.chain[0], "hi", "sys", 32) == ["hi", None, "sys"]
    # system, seed, new thing, preset, repetition penalty, top-p, max tokens, temperature
    assert chat.values(chat.reply, "hi", "sys", 32) == [None, "sys", -1, True, "plain", 1.2, 0.9, 32, 0.0]
    assert chat.api_values(chat.reply, "hi", "sys", 32)[0] == "sys"  # states dropped for gradio_client
    assert chat.sampling_defaults == {"top_p": 0.9, "repetition_penalty": 1.2}


def test_a_single_streaming_submit_event_works_too():
    cfg = config()
    cfg["dependencies"] = [dep(5, "chat", [[3, "submit"]], [3, 1, 4, 5], [2, 1], generator=True)]
    chat = find_chat_event(cfg)
    assert [e.api_name for e in chat.chain] == ["chat"]
    assert chat.values(chat.reply, "hi", "sys", 32) == ["hi", None, "sys", 0.0]


def test_says_what_it_saw_when_there_is_no_chat_event():
    cfg = config()
    cfg["dependencies"] = cfg["dependencies"][:1]  # only the two-chatbot event
    with pytest.raises(ChatEventNotFound, match="2 chatbot output"):
        find_chat_event(cfg)


def test_reply_text_takes_the_answer_after_the_last_user_message():
    chat = [
        {"role": "user", "content": [{"type": "text", "text": "old"}]},
        {"role": "assistant", "content": "old reply"},
        {"role": "user", "content": [{"type": "text", "text": "new"}]},
        {"role": "assistant", "content": "searching", "metadata": {"title": "Tool call"}},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer."}]},
    ]
    assert reply_text(chat) == "The answer."
    assert reply_text(None) == ""
