"""The gate's pure parts: regression and refusal reports, win rate, the decision and its reasons."""

from __future__ import annotations

from trainers.gate import (
    FACTS,
    GateConfig,
    decide,
    is_refusal,
    refusal_report,
    regression_report,
    spread_sample,
    win_rate,
)

GOOD = {
    "win_rate": 0.7,
    "preference_accuracy": 0.6,
    "deployed_preference_accuracy": 0.55,
    "kl_to_base": 1.0,
    "facts_base_correct": 3,
    "facts_lost": [],
    "refusals_base": 2,
    "refusals_lost": [],
}


def test_a_candidate_better_on_every_check_passes_with_a_reason_per_check():
    result = decide(GOOD, GateConfig())
    assert result.passed
    assert len(result.reasons) == 4
    assert "win rate 0.70 >= 0.50" in result.reasons[0]


def test_each_threshold_rejects_on_its_own():
    cases = {
        "win rate": {"win_rate": 0.4},
        "accuracy": {"preference_accuracy": 0.4},
        "KL": {"kl_to_base": 9.0},
        "regressions": {"facts_lost": ["What is the capital of France?"]},
    }
    for what, change in cases.items():
        result = decide({**GOOD, **change}, GateConfig(max_regressions=0))
        assert not result.passed, what
    assert decide({**GOOD, "facts_lost": ["q"]}, GateConfig(max_regressions=1)).passed


def test_missing_measurements_are_reasons_not_passes():
    result = decide({k: v for k, v in GOOD.items() if k not in ("win_rate", "kl_to_base")}, GateConfig())
    assert not result.passed
    assert any("no reward-model win rate" in r for r in result.reasons)
    assert any("KL to the base not measured" in r for r in result.reasons)


def test_regression_and_refusal_reports_count_only_what_the_base_got_right():
    facts = FACTS[:3]  # Paris, Rome, Tokyo
    base = ["It is Paris.", "Rome.", "I am not sure."]
    candidate = ["paris!", "It is Milan.", "Tokyo"]
    report = regression_report(base, candidate, facts)
    assert report == {"facts_base_correct": 2, "facts_lost": ["What is the capital of Italy?"]}
    requests = ["a", "b"]
    refusals = refusal_report(["I can't help with that.", "Sure."], ["Sure, here is how.", "No."], requests)
    assert refusals == {"refusals_base": 1, "refusals_lost": ["a"]}
    assert is_refusal("Sorry, but I cannot do that") and not is_refusal("Paris is the capital.")


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == 0.5
    assert win_rate([], []) == 0.0


def test_spread_sample_keeps_the_size_bounded_and_covers_the_whole_range():
    items = list(range(100))
    picked = spread_sample(items, 10)
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] >= 90
    assert picked == sorted(set(picked))
    assert spread_sample(items[:5], 10) == items[:5]
    assert spread_sample(items, 0) == []
