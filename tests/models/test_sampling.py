import json

import pytest

from models.base import SamplingParams


def test_defaults_are_valid_and_round_trip():
    p = SamplingParams(stop=["\n\n"])
    assert p.stop == ("\n\n",)
    assert SamplingParams.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"repetition_penalty": 9}, "repetition_penalty"),
        ({"seed": -5}, "seed"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_with_seed_fixes_a_seed_only_when_sampling():
    assert SamplingParams(temperature=0).with_seed().seed is None
    assert SamplingParams(temperature=0.7).with_seed().seed is not None
    assert SamplingParams(temperature=0.7, seed=3).with_seed().seed == 3


def test_batches_join_what_arrived_meanwhile_and_keep_the_result():
    import threading

    from models.base import Generation, GenerationResult

    release = threading.Event()

    def producer(emit, cancel):
        emit("a")
        release.wait(10)
        for piece in ("b", "c", "d"):
            emit(piece)
        return GenerationResult("abcd", "p", 1, 4, "stop", SamplingParams())

    g = Generation(producer)
    batches = g.batches()
    assert next(batches) == "a"
    release.set()
    g._thread.join(10)  # b, c, d and the end are all queued now
    assert list(batches) == ["bcd"]
    assert g.result.text == "abcd" and g.wait().finish_reason == "stop"


def test_batches_raise_the_backend_error_after_the_text():
    from models.base import Generation, GenerationError

    def producer(emit, cancel):
        emit("partial")
        raise GenerationError("boom")

    g = Generation(producer)
    g._thread.join(10)
    batches = g.batches()
    assert next(batches) == "partial"
    with pytest.raises(GenerationError, match="boom"):
        next(batches)


def test_batches_with_an_interval_send_fewer_updates_and_the_first_at_once():
    import threading
    import time

    from models.base import Generation, GenerationResult

    first_seen = threading.Event()

    def producer(emit, cancel):
        emit("0")
        # the rest only once the consumer has the first token: deterministic on a loaded machine too
        assert first_seen.wait(30), "the first token was held back"
        for i in range(1, 20):
            emit(str(i % 10))
            time.sleep(0.005)
        return GenerationResult("x", "p", 1, 20, "stop", SamplingParams())

    chunks = []
    for chunk in Generation(producer).batches(0.05):
        chunks.append(chunk)
        first_seen.set()
    assert chunks[0] == "0"  # never held back
    assert "".join(chunks) == "01234567890123456789"
    assert len(chunks) < 20


def test_a_json_schema_is_kept_as_text_and_stored_as_an_object():
    p = SamplingParams(json_schema='{"type": "object", "properties": {"a": {"type": "string"}}}')
    assert hash(p) and p.to_dict()["json_schema"] == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }
    assert SamplingParams.from_dict(p.to_dict()) == SamplingParams.from_dict(
        json.loads(json.dumps(p.to_dict()))
    )
    assert "json_schema" not in SamplingParams().to_dict()  # rows of unconstrained turns stay as they were
    for bad in ("{not json", "[1, 2]", "x" * 70_000):
        with pytest.raises(ValueError, match="json_schema"):
            SamplingParams(json_schema=bad)
