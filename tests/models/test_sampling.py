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
