"""ReAct's pure core: parsing model turns and the loop control, driven by scripted model turns."""

import pytest

from playground.presets.techniques.react import (
    ReactLoop,
    parse_react,
    run_tool,
    system_prompt,
    trajectory_turns,
)
from playground.tools import default_tools

TOOLS = ["calculator", "search", "clock"]


@pytest.mark.parametrize(
    ("text", "tool", "arg"),
    [
        ("Thought: multiply.\nAction: calculator[12 * 7]", "calculator", "12 * 7"),
        ("Thought: x\nAction: calculator(12 * (3 + 4))", "calculator", "12 * (3 + 4)"),
        ('Action: search["Vasa ship"]', "search", "Vasa ship"),
        ("Action: search[capital of [France]]", "search", "capital of [France]"),
        ("**Action:** `calculator[2+2]`", "calculator", "2+2"),
        ("Action: Search\nAction Input: boiling point", "Search", "boiling point"),
        ("Action: search: boiling point", "search", "boiling point"),
        ("Action: search boiling point of water", "search", "boiling point of water"),
        ("Action: clock[]", "clock", ""),
        ("Action: calculator[2 + 2", "calculator", "2 + 2"),
    ],
)
def test_actions_are_read_in_their_usual_variants(text, tool, arg):
    parsed = parse_react(text)
    assert (parsed.action, parsed.action_input) == (tool, arg)
    assert parsed.final_answer is None


def test_thoughts_final_answers_and_their_order():
    parsed = parse_react("Thought: I know it.\nFinal Answer: 84\nThought: extra")
    assert parsed.thought == "I know it." and parsed.final_answer == "84" and parsed.action is None
    # an action written before a final answer wins: the final answer would be based on an invented observation
    first = parse_react("Thought: t\nAction: calculator[1+1]\nObservation: 2\nFinal Answer: 2")
    assert first.action == "calculator" and first.final_answer is None
    assert parse_react("Question: q\nThought: hmm").thought == "hmm"
    assert parse_react("Action: ???").unreadable_action


def test_a_full_episode_act_observe_final():
    loop = ReactLoop(TOOLS, max_steps=4)
    assert loop.ready()
    d = loop.decide("Thought: I should multiply.\nAction: Calculator[12 * 7]")
    assert (d.kind, d.tool, d.tool_input, d.thought) == ("act", "calculator", "12 * 7", "I should multiply.")
    loop.observe("84")
    transcript = loop.transcript()
    assert transcript == [
        {"role": "assistant", "content": "Thought: I should multiply.\nAction: calculator[12 * 7]"},
        {"role": "user", "content": "Observation: 84"},
    ]
    d = loop.decide("Thought: I know the answer.\nFinal Answer: 84")
    assert (d.kind, d.answer) == ("final", "84")


def test_unknown_tools_and_unreadable_actions_become_error_observations_then_repeat_stops():
    loop = ReactLoop(TOOLS, max_steps=6)
    d = loop.decide("Action: shell[rm -rf /]")
    assert d.kind == "error" and "Unknown tool 'shell'" in d.message and "calculator" in d.message
    loop.observe(d.message)
    assert loop.transcript()[-1]["content"].startswith("Observation: Unknown tool")
    d = loop.decide("Action: ???")
    assert d.kind == "error" and "Could not read the action" in d.message
    loop.observe(d.message)
    d = loop.decide("Action: shell[rm -rf /]")
    assert d.kind == "stop" and "repeated the same invalid action" in d.message
    assert not loop.ready() and loop.stop_reason == d.message


def test_repeated_identical_actions_are_a_loop():
    loop = ReactLoop(TOOLS, max_steps=6)
    assert loop.decide("Action: search[Vasa]").kind == "act"
    loop.observe("[1] The Vasa ...")
    d = loop.decide("Thought: again\nAction: search[ vasa ]")
    assert d.kind == "stop" and "repeated the action search[vasa]" in d.message
    assert not loop.ready()


def test_step_limit():
    loop = ReactLoop(TOOLS, max_steps=2)
    for expr in ("1+1", "2+2"):
        assert loop.ready()
        assert loop.decide(f"Action: calculator[{expr}]").kind == "act"
        loop.observe("x")
    assert not loop.ready() and "step limit of 2" in loop.stop_reason


def test_replies_outside_the_format():
    loop = ReactLoop(TOOLS, max_steps=3)
    d = loop.decide("Paris is the capital of France.")
    assert d.kind == "final" and d.answer == "Paris is the capital of France." and "did not use" in d.message
    assert ReactLoop(TOOLS, 3).decide("   ").kind == "stop"
    assert ReactLoop(TOOLS, 3).decide("Final Answer:").kind == "stop"
    loop = ReactLoop(TOOLS, 3)
    d = loop.decide("Thought: I need the capital.")
    assert d.kind == "error" and "no action" in d.message
    with pytest.raises(RuntimeError):
        ReactLoop(TOOLS, 3).observe("nothing was asked")


def test_tools_run_for_real_and_their_errors_become_observations():
    tools = default_tools()
    assert run_tool(tools, "calculator", "6 * 7") == ("42", False)
    text, failed = run_tool(tools, "calculator", "__import__('os')")
    assert failed and text.startswith("Error: ")

    class Broken:
        name, description = "broken", "broken[]: fails"

        def run(self, arg):
            raise KeyError(arg)

    assert run_tool({"broken": Broken()}, "broken", "x") == (
        "Error: the broken tool failed (KeyError).",
        True,
    )


def test_system_prompt_lists_the_tools_and_examples_become_turns():
    text = system_prompt("Be brief.", "Tools:\n{tools}", default_tools())
    assert text.startswith("Be brief.\n\nTools:\n- calculator[expression]")
    turns = trajectory_turns(
        "Question: 12 x 7?", "Thought: multiply\nAction: calculator[12*7]\nObservation: 84", "84"
    )
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[2]["content"] == "Observation: 84"
    assert turns[3]["content"].endswith("Final Answer: 84")
