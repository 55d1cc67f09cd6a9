import pytest

from playground.presets.answers import answer_key, canonical_number, extract_answer, majority_vote


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("3 * 4 = 12. He eats 2, so 10 are left. The answer is 10.", "10"),
        ("The answer is 3.5 kg.", "3.5 kg"),
        ("So the final answer is: **Paris**.\nHope this helps!", "Paris"),
        ("Answer: 42", "42"),
        ("work...\n#### 1,250", "1,250"),
        ("It is \\boxed{17} indeed.", "17"),
        ("First line\nThe capital is Canberra.", "The capital is Canberra."),
        ("The answer is 10. Wait, the answer is 12.", "12"),
        ("", ""),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("12 - 2 = 10 apples are left. The answer is 10.", "10"),
        ("The answer is 10 apples, from 12 at first.", "10"),
        ("She had 12 and used 3, so 9 remain", "9"),
        ("The answer is $1,250.00.", "1250"),
        ("The answer is -0.", "0"),
        ("The answer is Canberra.", "canberra"),
        ("The answer is the Pacific Ocean!", "pacific ocean"),
        ("   ", ""),
    ],
)
def test_answer_key(text, key):
    assert answer_key(text) == key


def test_canonical_numbers():
    assert canonical_number("1,000") == "1000"
    assert canonical_number("12.50") == "12.5"
    assert canonical_number("1e3") == "1000"
    assert canonical_number("x") is None


def test_majority_vote_counts_ignores_empty_and_breaks_ties_by_first_appearance():
    vote = majority_vote(["10", "", "12", "10", "12", "9"])
    assert vote.winner == "10" and vote.counts == {"10": 2, "12": 2, "9": 1}
    assert (vote.total, vote.valid) == (6, 5) and vote.agreement == pytest.approx(0.4)
    assert majority_vote(["", ""]).winner is None
    assert majority_vote(["a", "b", "b"]).winner == "b"
