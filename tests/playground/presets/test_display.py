"""Trace rows in the Chatbot, and the session's chatbot-index -> turn mapping with them."""

from playground.presets.display import apply_event, fenced, trace_rows
from playground.presets.events import Event
from playground.session import ChatSession, Turn

TRACE = [
    {"type": "thought", "title": "Reasoning", "text": "2 and 2 make 4."},
    {
        "type": "model_call",
        "title": "Model call 1: reasoning",
        "text": "2 and 2 make 4.",
        "prompt": "<p>",
        "call": 1,
    },
    {"type": "model_call", "title": "Model call 2: sample", "text": "x", "prompt_same_as_call": 1, "call": 2},
    {"type": "vote", "title": "Vote: 4 (2 of 2)", "text": "- **4**: 2 of 2", "counts": {"4": 2}},
]


def info(**extra):
    return {"technique": "self_consistency", "preset_name": "Self-consistency", "trace": TRACE, **extra}


def test_plain_replies_have_no_trace_rows():
    assert trace_rows({"technique": "zero_shot", "trace": TRACE}, "k") == []
    assert trace_rows({}, "k") == []


def test_trace_rows_nest_steps_and_model_calls_under_one_parent():
    rows = trace_rows(info(), "trace-1")
    parent = rows[0]["metadata"]
    assert parent == {"title": "🔎 Trace · Self-consistency", "id": "trace-1", "status": "done"}
    steps = [r for r in rows if r["metadata"].get("parent_id") == "trace-1"]
    assert [r["metadata"]["title"] for r in steps] == [
        "💭 Reasoning",
        "🗳️ Vote: 4 (2 of 2)",
        "📨 Model calls (2)",
    ]
    calls = [r for r in rows if r["metadata"].get("parent_id") == "trace-1-calls"]
    assert len(calls) == 2 and "<p>" in calls[0]["content"] and "same as model call 1" in calls[1]["content"]
    assert all(r["role"] == "assistant" for r in rows)
    assert len({r["metadata"]["id"] for r in rows}) == len(rows)


def test_streaming_events_fold_into_the_reply():
    turn = Turn("assistant", "", info={"technique": "zero_shot_cot", "trace": [], "streaming": True})
    apply_event(turn, Event("partial", "Let's ", "reasoning"))
    apply_event(turn, Event("partial", "see.", "reasoning"))
    assert turn.info["pending"] == {"title": "reasoning", "text": "Let's see."}
    rows = trace_rows(turn.info, "t")
    assert rows[0]["metadata"]["status"] == "pending" and rows[-1]["metadata"]["status"] == "pending"
    apply_event(turn, Event("thought", "Let's see.", "Reasoning"))
    assert "pending" not in turn.info and turn.info["trace"][0]["type"] == "thought"
    apply_event(turn, Event("answer", "4"))
    apply_event(turn, Event("answer", "2"))
    assert turn.content == "42"
    apply_event(turn, Event("answer", "Four", data={"replace": True}))
    assert turn.content == "Four"


def test_fences_cannot_be_closed_by_the_text():
    assert fenced("a ``` b").startswith("````\n")
    assert fenced("plain") == "```\nplain\n```"


def make_session():
    s = ChatSession(user_id="u", conversation_id="c")
    s.turns = [
        Turn("user", "q1", 1),
        Turn("assistant", "a1", 2, info=info()),
        Turn("user", "q2", 3),
        Turn("assistant", "a2", 4, info={"technique": "zero_shot", "trace": TRACE}),
    ]
    return s


def test_trace_rows_come_before_their_reply_and_map_to_its_turn():
    s = make_session()
    shown = s.chatbot_messages()
    n_rows = len(trace_rows(info(), "trace-1"))
    assert len(shown) == 4 + n_rows
    assert shown[1]["metadata"]["id"] == "trace-1"
    assert shown[n_rows + 1] == {"role": "assistant", "content": "a1"}
    assert s.index_map == [0] + [1] * n_rows + [1, 2, 3]
    # Gradio reports a like on a grouped bubble with the index of its FIRST message: the trace parent.
    assert s.turns[s.turn_index(1)].message_id == 2
    # Retry and undo receive the user message's chatbot index.
    user2 = shown.index({"role": "user", "content": "q2"})
    assert s.turn_index(user2) == 2
    assert s.cut_for_retry(s.turn_index(user2)) and [t.message_id for t in s.turns] == [1, 2, 3]
    assert s.undo(s.turn_index(0)) == "q1" and s.turns == []
