"""The gate's pure parts: regression and refusal reports, win rate, intervals, the rule and its reasons,
and the rule's error rates measured on simulated evidence with a known truth."""

from __future__ import annotations

import random

from trainers.gate import (
    FACTS,
    HARMFUL_REQUESTS,
    GateConfig,
    bootstrap_mean,
    decide,
    is_refusal,
    per_prompt_wins,
    preference_values,
    refusal_report,
    regression_report,
    spread_sample,
    win_rate,
)

N_FACTS = 80


def evidence(win=0.7, preference=0.6, kl=1.0, facts_lost=(), refusals_lost=(), prompts=40, pairs=48):
    """Per-item evidence whose means are the given values (deterministic patterns, not draws)."""

    def pattern(mean: float, n: int) -> list[float]:
        ones = round(mean * n)
        return [1.0] * ones + [0.0] * (n - ones)

    return {
        "win_per_prompt": pattern(win, prompts),
        "win_rate": win,
        "preference_per_pair": pattern(preference, pairs),
        "kl_per_prompt": [kl] * 16,
        "kl_to_base": kl,
        "facts_base_correct": N_FACTS,
        "facts_lost": list(facts_lost),
        "facts_diff": [-1] * len(facts_lost) + [0] * (N_FACTS - len(facts_lost)),
        "refusals_base": 12,
        "refusals_lost": list(refusals_lost),
        "refusals_diff": [-1] * len(refusals_lost) + [0] * (12 - len(refusals_lost)),
    }


GOOD = evidence()


def test_a_candidate_better_on_every_check_passes_with_a_reason_per_check():
    result = decide(GOOD, GateConfig())
    assert result.passed and result.decision == "deploy"
    assert len(result.reasons) == 4
    assert "win rate 0.70 >= 0.50" in result.reasons[0]
    assert {c.name for c in result.checks} == {"win rate", "held-out pairs", "KL", "facts", "refusals"}
    win = result.checks[0]
    assert win.low < win.estimate < win.high and win.low > 0.5 and win.n == 40


def test_each_threshold_rejects_on_its_own():
    cases = {
        "win rate": evidence(win=0.2),
        "accuracy": evidence(preference=0.1),
        "KL": evidence(kl=9.0),
        "regressions": evidence(facts_lost=["What is the capital of France?"] * 20),
    }
    for what, metrics in cases.items():
        result = decide(metrics, GateConfig(max_regressions=0))
        assert not result.passed and result.decision == "reject", (what, result.reasons)
    assert decide(evidence(facts_lost=["q"] * 4), GateConfig(max_regressions=4)).passed


def test_one_flipped_fact_is_not_the_decision():
    assert decide(evidence(facts_lost=["What is the capital of Italy?"]), GateConfig()).decision == "deploy"


def test_not_enough_evidence_is_undecided_never_a_coin_flip():
    for metrics in (evidence(win=0.55), evidence(win=0.9, prompts=5), evidence(facts_lost=["q"] * 6)):
        result = decide(metrics, GateConfig())
        assert result.decision == "undecided" and not result.passed
        assert result.reasons[0].startswith("undecided: needs more evidence")


def test_an_unchanged_model_is_no_improvement():
    """All ties (the same replies and likelihoods): the win rate is exactly 0.5, never above it."""
    metrics = evidence()
    metrics["win_per_prompt"] = [0.5] * 40
    metrics["preference_per_pair"] = preference_values([1.0] * 48, [1.0] * 48)
    assert decide(metrics, GateConfig()).decision == "undecided"


def test_missing_measurements_are_reasons_not_passes():
    metrics = {
        k: v
        for k, v in GOOD.items()
        if k not in ("win_rate", "win_per_prompt", "kl_to_base", "kl_per_prompt")
    }
    result = decide(metrics, GateConfig())
    assert not result.passed
    assert any("no reward-model win rate" in r for r in result.reasons)
    assert any("KL to the base not measured" in r for r in result.reasons)


def test_a_zero_minimum_win_rate_and_a_regression_allowance_always_deploy():
    """What test and benchmark configurations use to exercise deployment with tiny evidence."""
    lenient = GateConfig(min_win_rate=0.0, kl_budget=1000, max_regressions=99)
    metrics = evidence(win=0.0, prompts=2, pairs=1, facts_lost=["q"] * 2, refusals_lost=["r"])
    assert decide(metrics, lenient).decision == "deploy"


def test_regression_and_refusal_reports_count_only_what_the_base_got_right():
    facts = FACTS[:3]
    base = [f"It is {facts[0].answers[0]}.", facts[1].answers[0], "I am not sure."]
    candidate = [facts[0].answers[0].lower() + "!", "It is somewhere else.", facts[2].answers[0]]
    report = regression_report(base, candidate, facts)
    assert report["facts_base_correct"] == 2 and report["facts_lost"] == [facts[1].question]
    assert report["facts_diff"] == [0, -1, 1]
    requests = ["a", "b"]
    refusals = refusal_report(["I can't help with that.", "Sure."], ["Sure, here is how.", "No."], requests)
    assert refusals == {"refusals_base": 1, "refusals_lost": ["a"], "refusals_diff": [-1]}
    assert is_refusal("Sorry, but I cannot do that") and not is_refusal("Paris is the capital.")


def test_the_regression_sets_are_large_enough():
    assert len(FACTS) >= 64 and len({f.question for f in FACTS}) == len(FACTS)
    assert len(HARMFUL_REQUESTS) >= 16


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == 0.5
    assert win_rate([], []) == 0.0
    assert per_prompt_wins([[1.0, 0.0], [2.0, 2.0]], [[0.0, 1.0], [1.0, 3.0]]) == [0.5, 0.5]


def test_bootstrap_interval_is_deterministic_and_covers_the_mean():
    rng = random.Random(1)
    values = [rng.random() for _ in range(40)]
    a, b = bootstrap_mean(values), bootstrap_mean(values)
    assert a == b and a.low < a.estimate < a.high and a.n == 40
    assert bootstrap_mean([]) is None and bootstrap_mean([0.0, 0.0]).high == 0.0


def test_spread_sample_keeps_the_size_bounded_and_covers_the_whole_range():
    items = list(range(100))
    picked = spread_sample(items, 10)
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] >= 90
    assert picked == sorted(set(picked))
    assert spread_sample(items[:5], 10) == items[:5]
    assert spread_sample(items, 0) == []


# -- error rates of the rule under the default gate ----------------------------------------------------
TRIALS = 400


def simulate(rng: random.Random, p_win: float, fact_loss: float, prompts: int = 32, samples: int = 2) -> dict:
    """Evidence drawn from a known truth: each sample beats the deployed one with probability
    ``p_win``; each of 80 facts flips with probability 3% either way plus ``fact_loss`` (lost only)."""
    wins = [sum(rng.random() < p_win for _ in range(samples)) / samples for _ in range(prompts)]
    diffs = []
    for _ in range(N_FACTS):
        u = rng.random()
        diffs.append(-1 if u < 0.03 + fact_loss else 1 if u > 1 - 0.03 else 0)
    lost = [f"q{i}" for i, d in enumerate(diffs) if d < 0]
    return {
        **evidence(),
        "win_per_prompt": wins,
        "facts_diff": diffs,
        "facts_lost": lost,
    }


def rates(p_win: float, fact_loss: float = 0.0, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    decisions = [decide(simulate(rng, p_win, fact_loss), GateConfig()).decision for _ in range(TRIALS)]
    return {d: decisions.count(d) / TRIALS for d in ("deploy", "reject", "undecided")}


def test_error_rates_with_no_true_difference():
    """A candidate exactly as good as the deployed version: deployed in at most 5% of cycles (the
    interval's 2.5% tail; 3.3% measured here), rejected in at most 5% (2.8%), otherwise undecided."""
    r = rates(p_win=0.5)
    assert r["deploy"] <= 0.05 and r["reject"] <= 0.05, r


def test_error_rates_with_a_clearly_better_candidate():
    """The best loop candidates won 68-69% of gold comparisons: such a candidate is never rejected and
    deployed in most cycles on 32 prompts x 2 samples (85% measured; the rest undecided)."""
    r = rates(p_win=0.7)
    assert r["reject"] == 0.0 and r["deploy"] >= 0.8, r


def test_error_rates_with_a_worse_candidate_and_with_lost_facts():
    worse = rates(p_win=0.3)
    assert worse["deploy"] == 0.0 and worse["reject"] >= 0.8, worse
    # better on the primary but losing a quarter of the facts: never deployed, mostly rejected
    forgetful = rates(p_win=0.7, fact_loss=0.25)
    assert forgetful["deploy"] == 0.0 and forgetful["reject"] >= 0.6, forgetful
