"""Presets run for real on the embedded model through the ModelService: answers, traces, counts,
cancellation (model instances come back) and two runs streaming at once."""

import json
import time

import pytest

from models.base import GenerationError, SamplingParams
from models.service import ModelService
from playground.presets import BUILTIN_DIR, Example, load_presets, run_preset
from playground.presets.answers import answer_key
from playground.replies import Interleaved
from playground.tools import default_tools
from playground.tools.knowledge import KnowledgeBase

QUESTION = [{"role": "user", "content": "What is 6 times 7?"}]
SHORT = SamplingParams(temperature=0.0, seed=0, max_new_tokens=40)


@pytest.fixture(scope="module")
def presets():
    return load_presets(BUILTIN_DIR)


@pytest.fixture(scope="module")
def service(embedded_model):
    return ModelService(embedded_model, 1, "base")


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb") / "kb.db")
    kb.refresh()
    return default_tools(kb)


def consume(run):
    answer, kinds = "", []
    for event in run:
        kinds.append(event.kind)
        if event.kind == "answer":
            answer = event.text if event.data.get("replace") else answer + event.text
    return answer, kinds


def check_common(run, streamed):
    assert run.done and run.error is None and not run.cancelled
    assert streamed == run.answer == run.result.text
    assert run.result.version_id == 1 and run.result.prompt
    calls = [e for e in run.trace if e["type"] == "model_call"]
    assert len(calls) == run.model_calls >= 1
    assert [c["call"] for c in calls] == list(range(1, run.model_calls + 1))
    json.dumps(run.trace)  # stored as JSON with the message
    assert run.result.total_s >= run.last_result.total_s > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset_id",
    [
        "plain",
        "few-shot",
        "zero-shot-cot",
        "few-shot-cot",
        "self-consistency",
        "generated-knowledge",
        "react",
        "defended",
    ],
)
def test_every_builtin_preset_runs_its_method(presets, service, tools, preset_id):
    preset = presets[preset_id]
    run = run_preset(preset, QUESTION, SHORT, service, tools=tools)
    streamed, kinds = consume(run)
    check_common(run, streamed)
    trace = run.trace
    prompt = run.result.prompt
    if preset_id in ("plain", "few-shot", "few-shot-cot", "defended"):
        assert run.model_calls == 1 and "6 times 7" in prompt
    if preset_id in ("few-shot", "few-shot-cot"):
        assert preset.examples[0].question in prompt
    if preset_id == "few-shot-cot":
        assert trace[-1]["title"] == "Extracted answer"
    if preset_id == "zero-shot-cot":
        assert run.model_calls == 2 and "partial" in kinds
        reasoning = next(e for e in trace if e["type"] == "thought")
        assert reasoning["title"] == "Reasoning" and reasoning["text"] in prompt
        assert "Let's think step by step." in prompt and preset.options.extraction_prompt in prompt
    if preset_id == "self-consistency":
        samples = [e for e in trace if e["type"] == "sample"]
        vote = next(e for e in trace if e["type"] == "vote")
        assert run.model_calls == len(samples) == 5
        assert len({s["seed"] for s in samples}) == 5  # really different samples
        assert sum(vote["counts"].values()) == vote["valid"] <= 5
        assert any("temperature 0 was raised" in n for n in run.notices)
        if vote["winner"] is not None:
            assert answer_key(run.answer) == vote["winner"]
            assert run.answer in [s["text"] for s in samples] or run.answer.strip() in [
                s["text"] for s in samples
            ]
    if preset_id == "generated-knowledge":
        facts = next(e for e in trace if e["type"] == "thought")
        assert run.model_calls == 2 and facts["title"] == "Generated knowledge"
        assert facts["text"].strip()[:40] in prompt
    if preset_id == "react":
        assert run.model_calls <= preset.options.max_steps
        types = [e["type"] for e in trace if e["type"] != "model_call"]
        for i, kind in enumerate(types):
            if kind == "tool_call":
                assert types[i + 1] == "observation"
        assert "calculator[expression]" in prompt  # the tools are described to the model
    if preset_id == "defended":
        assert "<<<USER_INPUT_" in prompt and "<<<END_USER_INPUT_" in prompt
        assert prompt.index("<<<USER_INPUT_") < prompt.index("What is 6 times 7?")


def test_edited_examples_reach_the_prompt(presets, service):
    examples = [Example(question="What is 9 times 9?", answer="81, of course.")]
    run = run_preset(presets["few-shot"], QUESTION, SHORT, service, examples=examples)
    run.wait()
    assert (
        "81, of course." in run.result.prompt
        and presets["few-shot"].examples[0].answer not in run.result.prompt
    )


def test_cancel_ends_the_run_and_gives_every_model_instance_back(presets, service, embedded_model):
    params = SamplingParams(temperature=0.8, seed=1, max_new_tokens=400)
    run = run_preset(
        presets["self-consistency"], [{"role": "user", "content": "Write a long story."}], params, service
    )
    time.sleep(1.0)
    run.cancel()
    run.wait()
    assert run.cancelled and run.done
    assert run.result is None or run.result.finish_reason == "cancelled"
    deadline = time.monotonic() + 30
    while embedded_model.active_generations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert embedded_model.active_generations == 0
    assert embedded_model._pool.qsize() == embedded_model.pool_size
    # the pool still works afterwards
    assert run_preset(presets["plain"], QUESTION, SHORT, service).wait().text


def test_two_runs_stream_at_the_same_time(presets, service):
    params = SamplingParams(temperature=0.0, seed=0, max_new_tokens=60)
    runs = [
        run_preset(presets["plain"], [{"role": "user", "content": "Name three colours."}], params, service),
        run_preset(presets["zero-shot-cot"], QUESTION, params, service),
    ]
    order = [i for i, event in Interleaved(runs) if event.kind in ("answer", "partial")]
    assert runs[0].answer and runs[1].answer
    assert all(r.error is None for r in runs)
    # Both produced text before either had finished: the index switches back and forth.
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches >= 2, order


def test_bad_requests_fail_clearly(presets, service):
    with pytest.raises(ValueError, match="ends with a user message"):
        run_preset(presets["plain"], [{"role": "assistant", "content": "hi"}], SHORT, service)
    run = run_preset(presets["plain"], QUESTION, SHORT, service, version_id=99)
    with pytest.raises(GenerationError, match="version 99 is not loaded"):
        run.wait()
