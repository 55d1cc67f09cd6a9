"""Integration tests on the real embedded model through llama.cpp (no fakes)."""

import json
import logging
import threading

import pytest

from models.base import GenerationError, ModelLoadError, SamplingParams, UnsupportedParameter
from models.llamacpp import LlamaCppChatModel, check_gguf_file
from settings import DEFAULT_SYSTEM_PROMPT

QUESTION = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_greedy_answer_mentions_paris(embedded_model):
    """Also proves generation runs on this CPU (the AMX crash of FACTS.md would kill the process)."""
    generation = embedded_model.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=40))
    pieces = list(generation)
    result = generation.result
    assert "Paris" in "".join(pieces)
    assert result.text == "".join(pieces)
    assert result.finish_reason == "stop"
    assert result.prompt == embedded_model.render_prompt(QUESTION)
    assert result.prompt_tokens > 10 and 0 < result.completion_tokens <= 40
    assert result.ttft_s is not None and result.ttft_s > 0
    assert result.total_s >= result.ttft_s


def test_greedy_is_deterministic(embedded_model):
    p = SamplingParams(temperature=0, max_new_tokens=24)
    assert embedded_model.generate(QUESTION, p).text == embedded_model.generate(QUESTION, p).text


def test_two_concurrent_streams_complete(embedded_model):
    prompts = [
        [{"role": "user", "content": "Count from one to ten in words."}],
        [{"role": "user", "content": "Name three colours."}],
    ]
    results, errors = {}, []
    started = threading.Barrier(2)

    def run(i):
        try:
            started.wait()
            g = embedded_model.stream(prompts[i], SamplingParams(temperature=0.7, seed=i, max_new_tokens=48))
            chunks = list(g)
            results[i] = (chunks, g.result)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert set(results) == {0, 1}
    for chunks, result in results.values():
        assert chunks and result.finish_reason in ("stop", "length")
        assert result.text == "".join(chunks)


def test_more_streams_than_instances_queue_and_complete(embedded_model):
    gens = [
        embedded_model.stream(QUESTION, SamplingParams(temperature=0.8, seed=s, max_new_tokens=16))
        for s in range(5)
    ]
    results = [g.wait() for g in gens]
    assert all(r.completion_tokens > 0 for r in results)
    assert max(r.queue_s for r in results) > 0  # 5 requests, 2 instances: some waited


def test_cancel_stops_early_and_frees_the_instance(embedded_model):
    g = embedded_model.stream(
        [{"role": "user", "content": "Write a very long story."}],
        SamplingParams(temperature=0.8, seed=1, max_new_tokens=400),
    )
    next(g)
    g.cancel()
    result = g.wait()
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 400
    # both instances are usable again
    again = [
        embedded_model.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=8)) for _ in range(2)
    ]
    assert all(g.wait().completion_tokens > 0 for g in again)


def test_abandoned_iterator_releases_its_instance(embedded_model):
    for _ in range(3):  # more than the pool: would hang if instances leaked
        g = embedded_model.stream(QUESTION, SamplingParams(temperature=0.8, max_new_tokens=300))
        next(g)
        del g
    assert (
        embedded_model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=8)).completion_tokens
        > 0
    )


def test_sample_n_gives_k_seeded_replies(embedded_model):
    params = SamplingParams(temperature=1.0, seed=123, max_new_tokens=24)
    replies = embedded_model.sample_n(QUESTION, params, 4)
    assert [r.params.seed for r in replies] == [123, 124, 125, 126]
    assert len({r.text for r in replies}) >= 2
    again = embedded_model.sample_n(QUESTION, params, 4)
    assert [r.text for r in again] == [r.text for r in replies]  # seeds reproduce
    with pytest.raises(ValueError, match="greedy"):
        embedded_model.sample_n(QUESTION, SamplingParams(temperature=0), 2)


def test_stop_strings_and_length_limit(embedded_model):
    r = embedded_model.generate(
        [{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
        SamplingParams(temperature=0, max_new_tokens=5),
    )
    assert r.finish_reason == "length" and r.completion_tokens <= 6
    r = embedded_model.generate(QUESTION, SamplingParams(temperature=0, stop=("Paris",), max_new_tokens=40))
    assert "Paris" not in r.text and r.finish_reason == "stop"


def test_huge_message_is_truncated_with_a_notice():
    """On a 1024-token context: the same trimming as at 4096, without 25 s of prompt evaluation."""
    from models.embedded import embedded_model_path

    model = LlamaCppChatModel(embedded_model_path(), n_ctx=1024, pool_size=1)
    try:
        huge = "Tell me about cats. " * 5000  # 100k characters, far over the context
        r = model.generate(
            [{"role": "user", "content": huge}], SamplingParams(temperature=0, max_new_tokens=16)
        )
        assert model.context_length == 1024 and 900 < r.prompt_tokens <= 1024 - 16
        assert any("truncated" in n for n in r.notices)
    finally:
        model.close()


@pytest.mark.parametrize("kind", ["missing", "directory", "not_gguf", "truncated"])
def test_bad_model_paths_give_clear_errors(tmp_path, kind):
    path = tmp_path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    elif kind == "not_gguf":
        path.write_bytes(b"PK\x03\x04 definitely a zip file")
    elif kind == "truncated":
        path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ModelLoadError) as info:
        LlamaCppChatModel(path, pool_size=1)
    message = str(info.value)
    assert str(path) in message
    if kind == "not_gguf":
        assert "not a GGUF file" in message
    check = {"missing": "does not exist", "directory": "directory"}.get(kind)
    if check:
        assert check in message


def test_closed_model_refuses_new_generations():
    from models.embedded import embedded_model_path

    model = LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=1)
    g = model.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=16))
    closer = threading.Thread(target=model.close)
    closer.start()  # waits for the running generation
    assert "Paris" in g.wait().text or g.result.completion_tokens > 0
    closer.join(timeout=30)
    with pytest.raises(GenerationError, match="unloaded"):
        model.stream(QUESTION, SamplingParams(temperature=0))


def test_check_gguf_file_accepts_the_embedded_model():
    from models.embedded import embedded_model_path

    check_gguf_file(embedded_model_path())


def test_a_json_schema_constrains_the_reply(embedded_model):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "size": {"enum": ["small", "big"]}},
        "required": ["city", "size"],
        "additionalProperties": False,
    }
    params = SamplingParams(temperature=0.8, seed=11, max_new_tokens=60, json_schema=json.dumps(schema))
    for reply in embedded_model.sample_n(QUESTION, params, 3):
        assert reply.finish_reason == "stop" and reply.params.json_schema == params.json_schema
        value = json.loads(reply.text)
        assert (
            set(value) == {"city", "size"} and value["size"] in ("small", "big") and len(value["city"]) <= 30
        )
    with pytest.raises(UnsupportedParameter, match="minimum") as caught:
        embedded_model.stream(QUESTION, SamplingParams(json_schema='{"type": "integer", "minimum": 1}'))
    assert caught.value.param == "json_schema"
    assert embedded_model.active_generations == 0  # the refused request gave its slot back


def test_gpu_layers_without_a_gpu_build_warn_and_still_generate(caplog, embedded_model):
    """On this CPU-only build ``--gpu-layers -1`` offloads nothing: the model says so (log and
    load_warnings, which the server prints at start), with the command that rebuilds llama.cpp with CUDA."""
    import llama_cpp

    from models.loader import load_chat_model

    assert embedded_model.load_warnings == ()  # no GPU layers asked: nothing to say
    with caplog.at_level(logging.WARNING, logger="models.llamacpp"):
        model = load_chat_model(None, gpu_layers=-1, pool_size=1, n_threads=1)
    try:
        if llama_cpp.llama_supports_gpu_offload():  # a CUDA build: the layers really go to the GPU
            assert model.load_warnings == ()
        else:
            [warning] = model.load_warnings
            assert "nothing will be offloaded" in warning and "runs on the CPU" in warning
            assert 'CMAKE_ARGS="-DGGML_CUDA=on' in warning
            assert (
                "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==0.3.36" in warning
            )
            assert warning in caplog.text
        reply = model.generate(QUESTION, SamplingParams(temperature=0, max_new_tokens=12))
        assert reply.completion_tokens > 0 and reply.text
    finally:
        model.close()
