"""The statistics are pure functions: checked on data whose answer is known."""

import math

import numpy as np
import pytest

from feedback_store import stats
from feedback_store.stats import Battle


def test_ranking_pairs_expansion():
    assert stats.ranking_pairs(["a", "b", "c", "d"]) == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
        ("c", "d"),
    ]
    for k in range(2, 10):
        pairs = stats.ranking_pairs(list(range(k)))
        assert len(pairs) == k * (k - 1) // 2 and all(a < b for a, b in pairs)
    with pytest.raises(ValueError, match="once"):
        stats.ranking_pairs([1, 2, 1])


def test_wilson_interval_known_values():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = stats.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = stats.wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    # narrower with more data, always around the observed rate
    assert np.diff(stats.wilson_interval(50, 100)) < np.diff(stats.wilson_interval(5, 10))
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def test_rates_per_key():
    got = stats.rates([("v1", True), ("v1", False), ("v2", True), ("v1", True)])
    assert [(r.key, r.successes, r.n) for r in got] == [("v1", 2, 3), ("v2", 1, 1)]
    assert got[0].rate == pytest.approx(2 / 3) and got[0].low < 2 / 3 < got[0].high


def test_bradley_terry_matches_the_closed_form_for_two_players():
    # 3 wins to 1: the MLE odds are 3:1, i.e. 400*log10(3) Elo points apart, centred on 1000.
    battles = [Battle("A", "B", "a")] * 3 + [Battle("A", "B", "b")]
    r = stats.bradley_terry(battles, l2=0.0)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000)
    # ties are half wins: 1 win + 2 ties = 2 of 3 -> odds 2:1
    r = stats.bradley_terry([Battle("A", "B", "a"), Battle("A", "B", "tie"), Battle("B", "A", "tie")], l2=0.0)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(2), abs=0.01)
    # a weight is a repeat count
    weighted = stats.bradley_terry([Battle("A", "B", "a", 3.0), Battle("A", "B", "b")], l2=0.0)
    assert weighted["A"] - weighted["B"] == pytest.approx(400 * math.log10(3), abs=0.01)


def simulate(strengths: dict[str, float], n: int, seed: int, tie_rate: float = 0.1) -> list[Battle]:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        if rng.random() < tie_rate:
            out.append(Battle(names[a], names[b], "tie"))
            continue
        p_a = 1 / (1 + math.exp(strengths[names[b]] - strengths[names[a]]))
        out.append(Battle(names[a], names[b], "a" if rng.random() < p_a else "b"))
    return out


def test_bradley_terry_recovers_known_strengths():
    truth = {"v1": 0.0, "v2": 0.5, "v3": 1.0, "v4": 1.5, "v5": 2.5}
    r = stats.bradley_terry(simulate(truth, 4000, seed=1, tie_rate=0.0))
    assert sorted(r, key=r.get) == ["v1", "v2", "v3", "v4", "v5"]
    # on the log-odds scale the gaps come back within sampling noise
    fitted = {k: v * math.log(10) / 400 for k, v in r.items()}
    for name, strength in truth.items():
        assert fitted[name] - fitted["v1"] == pytest.approx(strength, abs=0.2), name
    # random ties (half wins) shrink the gaps but keep the order
    with_ties = stats.bradley_terry(simulate(truth, 4000, seed=1, tie_rate=0.2))
    assert sorted(with_ties, key=with_ties.get) == ["v1", "v2", "v3", "v4", "v5"]


def test_bradley_terry_stays_finite_when_a_player_never_lost():
    r = stats.bradley_terry([Battle("A", "B", "a")] * 5)
    assert all(math.isfinite(v) for v in r.values()) and r["A"] > r["B"]


def test_bootstrap_leaderboard_intervals_and_ranks():
    truth = {"weak": 0.0, "mid": 1.0, "strong": 3.0}
    battles = simulate(truth, 600, seed=2)
    board = stats.bootstrap_bradley_terry(battles, rounds=100, seed=0)
    assert [row.player for row in board] == ["strong", "mid", "weak"]
    for row in board:
        assert row.low <= row.rating <= row.high
    assert [row.rank for row in board] == [1, 2, 3]  # intervals this far apart do not overlap
    assert board == stats.bootstrap_bradley_terry(battles, rounds=100, seed=0)  # deterministic
    few = stats.bootstrap_bradley_terry(battles[:60], rounds=100, seed=0)
    width = {r.player: r.high - r.low for r in board}
    assert all(r.high - r.low > width[r.player] for r in few)  # less data, wider intervals
    assert sum(r.battles for r in board) == pytest.approx(2 * len(battles))
    assert stats.bootstrap_bradley_terry([]) == []


def test_overlapping_intervals_share_a_rank():
    battles = [Battle("A", "B", "a"), Battle("A", "B", "b"), Battle("B", "A", "tie")] * 3
    board = stats.bootstrap_bradley_terry(battles, rounds=50, seed=0)
    assert {r.rank for r in board} == {1}


def test_win_rates_and_matrix():
    battles = [
        Battle("A", "B", "a"),
        Battle("A", "B", "a"),
        Battle("B", "A", "tie"),
        Battle("C", "A", "b", 2.0),
    ]
    got = {w.player: w for w in stats.win_rates(battles)}
    assert (got["A"].wins, got["A"].ties, got["A"].losses, got["A"].battles) == (4.0, 1.0, 0.0, 5.0)
    assert got["A"].rate == pytest.approx(4.5 / 5)
    assert got["B"].rate == pytest.approx(0.5 / 3) and got["C"].rate == 0.0
    assert [w.player for w in stats.win_rates(battles)] == ["A", "B", "C"]
    players, m = stats.pairwise_win_matrix(battles)
    assert players == ["A", "B", "C"]
    assert m[0, 1] == pytest.approx(2.5 / 3) and m[1, 0] == pytest.approx(0.5 / 3)
    assert m[0, 2] == 1.0 and math.isnan(m[1, 2])


def test_bad_battles_are_refused():
    with pytest.raises(ValueError, match="outcome"):
        stats.bradley_terry([Battle("A", "B", "draw")])
    with pytest.raises(ValueError, match="two different"):
        stats.win_rates([Battle("A", "A", "a")])
    with pytest.raises(ValueError, match="positive"):
        stats.bradley_terry([Battle("A", "B", "a", 0.0)])


def test_counts_over_time_fill_gaps():
    events = [
        ("thumbs", "2026-11-01T10:00:00.000+00:00"),
        ("thumbs", "2026-11-01T11:00:00.000+00:00"),
        ("votes", "2026-11-03T09:00:00.000+00:00"),
    ]
    got = stats.counts_over_time(events)
    assert got["thumbs"] == [("2026-11-01", 2), ("2026-11-02", 0), ("2026-11-03", 0)]
    assert got["votes"] == [("2026-11-01", 0), ("2026-11-02", 0), ("2026-11-03", 1)]
    assert stats.counts_over_time([]) == {}
    assert list(stats.counts_over_time(events, bucket="month")["thumbs"]) == [("2026-11", 2)]
    with pytest.raises(ValueError):
        stats.counts_over_time(events, bucket="week")
