"""The pure parts of the simulated-user loop: prompt sets and their split, the gold oracles, the
Bradley-Terry labelers' statistics (fixed seeds), the event mix, and the round bookkeeping."""

from __future__ import annotations

import json
import math
import random

import pytest

from simulation.labelers import BradleyTerryLabeler, LabelStats
from simulation.measure import Measurement, win_rate
from simulation.oracles import ConciseFactOracle, VaderOracle, make_oracle
from simulation.plots import align_zero, curve, load_results
from simulation.rounds import feedback_summary, summary
from simulation.tasks import (
    TASK_FILES,
    Task,
    capability_tasks,
    is_heldout,
    load_tasks,
    prompt_set,
    split,
)
from simulation.users import EventMix, RoundFeedback
from trainers.gate import FACTS, FactCheck


# -- prompt sets -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sentiment", "facts"])
def test_prompt_sets_have_200_prompts_split_stably(name):
    ps = prompt_set(name)
    assert len(ps.train) + len(ps.heldout) >= 200
    assert 0.12 < len(ps.heldout) / (len(ps.train) + len(ps.heldout)) < 0.28
    assert not {t.id for t in ps.train} & {t.id for t in ps.heldout}
    again = prompt_set(name)
    assert [t.id for t in again.heldout] == [t.id for t in ps.heldout]  # a fixed rule, not a draw


def test_the_split_depends_on_the_group_or_else_the_id_only():
    tasks = [Task(f"x-{i}", "same prompt") for i in range(400)]
    ps = split("x", tasks, 0.2)
    assert {t.id for t in ps.heldout} == {t.id for t in tasks if is_heldout(t.id, 0.2)}
    assert 50 < len(ps.heldout) < 110
    grouped = [Task(f"y-{i}", f"prompt {i}", group=f"g{i // 4}") for i in range(400)]
    ps = split("y", grouped, 0.2)
    held = {t.group for t in ps.heldout}
    assert held and not held & {t.group for t in ps.train}  # a group is on one side, whole
    assert {t.group for t in ps.heldout} == {t.group for t in grouped if is_heldout(t.group, 0.2)}


def _content_words(prompt: str) -> frozenset[str]:
    import re

    instructions = set(
        re.findall(
            r"\w+",
            "a an the of to this and i my me about your you it is was write describe tell few sentences "
            "short review give what did think continue movie honest opinion",
        )
    )
    return frozenset(re.findall(r"[a-z']+", prompt.lower())) - instructions


@pytest.mark.parametrize("name", ["sentiment", "facts"])
def test_no_near_duplicates_straddle_the_split(name):
    """Two prompts that share most of their content words (one review opening with two endings) are
    never one trained on and one held out: the held-out figure would measure memory. Factual questions
    from one template about different things ("spoken in Austria" / "in Germany") are not duplicates;
    a rewording of one question (most of its words and the same answers) would be."""
    ps = prompt_set(name)
    train = [(t, _content_words(t.prompt)) for t in ps.train]
    for held in ps.heldout:
        words = _content_words(held.prompt)
        for t, other in train:
            overlap = len(words & other) / max(1, len(words | other))
            rewording = set(held.answers) == set(t.answers) and overlap >= 0.8
            assert (overlap < 0.6 or held.answers) and not rewording, (
                f"held-out {held.id} {held.prompt!r} ~ trained {t.id} {t.prompt!r}"
            )


def test_fact_sets_are_disjoint_and_answerable():
    facts = load_tasks(TASK_FILES["facts"])
    capability = capability_tasks()
    assert len(capability) >= 30 and all(t.answers for t in facts + capability)
    questions = {t.prompt for t in facts}
    assert not questions & {t.prompt for t in capability}
    gate_questions = {f.question for f in FACTS}
    assert not gate_questions & (questions | {t.prompt for t in capability})
    # no accepted answer may be given away by the question itself (echoing it would score)
    for t in facts + capability:
        assert not FactCheck(t.prompt, t.answers).correct(t.prompt), t


def test_a_broken_task_file_names_the_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"tasks.jsonl:2"):
        load_tasks(path)
    path.write_text('{"id": "a", "prompt": "ok"}\n{"id": "a", "prompt": "again"}\n')
    with pytest.raises(ValueError, match="repeated id"):
        load_tasks(path)


# -- oracles -----------------------------------------------------------------------------------------
def test_vader_scores_sentiment():
    oracle = VaderOracle()
    task = Task("t", "Write a review.")
    assert oracle.score(task, "I loved it, a wonderful and happy film!") > 0.8
    assert oracle.score(task, "Terrible, boring and awful. I hated it.") < -0.8
    assert oracle.score(task, "The film is 90 minutes long.") == 0.0


def test_concise_oracle_wants_the_fact_in_few_words():
    oracle = ConciseFactOracle()
    task = Task("t", "What is the capital of Peru?", answers=("Lima",))
    short_right = oracle.score(task, "Lima.")
    long_right = oracle.score(task, "The capital of Peru is Lima, " + "a lovely city " * 12)
    short_wrong = oracle.score(task, "Cusco.")
    assert short_right == pytest.approx(1 - 0.5 / 40)
    assert short_right > long_right > short_wrong
    assert long_right == pytest.approx(0.5)  # capped at 40 words: half the credit gone
    assert oracle.score(task, "Limassol is nice.") < 0.5  # whole words only
    with pytest.raises(ValueError, match="no accepted answers"):
        oracle.score(Task("u", "Hi"), "Hello")


def test_make_oracle_refuses_unknown_names():
    assert make_oracle("vader").prompt_set == "sentiment"
    assert make_oracle("concise").prompt_set == "facts"
    with pytest.raises(ValueError, match="unknown oracle"):
        make_oracle("helpfulness")


def test_the_documented_example_oracle_plugs_in_with_its_own_prompts():
    oracle = make_oracle("examples/polite_oracle.py:PoliteOracle")
    ps = prompt_set(oracle.prompt_set)  # the task file next to the oracle, split by its groups
    assert oracle.name == "polite" and ps.train and ps.heldout
    assert not {t.group for t in ps.train} & {t.group for t in ps.heldout}
    task = ps.heldout[0]
    assert oracle.score(task, "Thank you, I am happy to help.") > oracle.score(task, "Whatever, obviously.")


GOOD = """
class Gold:
    name = "mine"
    prompt_set = "{prompt_set}"
    thumbs_threshold = 0.2

    def score(self, task, reply):
        return {score}
"""


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "missing.py:Gold", "does not exist"),
        ("x = 1", "oracle.py:Gold", "has no class 'Gold'"),
        ("class Gold:\n    name = 'x'", "oracle.py:Gold", "lacks prompt_set, thumbs_threshold, score"),
        ("raise RuntimeError('boom')", "oracle.py:Gold", "importing .* failed: RuntimeError: boom"),
        (GOOD.format(prompt_set="nope.jsonl", score=1.0), "oracle.py:Gold", "neither a bundled set"),
        ("class Gold:\n    def __init__(self, x): pass", "oracle.py:Gold", "made with no arguments"),
    ],
)
def test_a_broken_oracle_file_says_what_is_wrong(tmp_path, source, spec, message):
    if source is not None:
        (tmp_path / "oracle.py").write_text(source)
    with pytest.raises(ValueError, match=message):
        make_oracle(str(tmp_path / spec))


def test_a_plugged_oracle_must_score_with_finite_numbers(tmp_path):
    (tmp_path / "oracle.py").write_text(GOOD.format(prompt_set="sentiment", score="float('nan')"))
    oracle = make_oracle(f"{tmp_path / 'oracle.py'}:Gold")
    assert (oracle.name, oracle.prompt_set, oracle.thumbs_threshold) == ("mine", "sentiment", 0.2)
    with pytest.raises(ValueError, match="finite number"):
        oracle.score(Task("t", "Hi"), "Hello")


def test_the_loop_command_refuses_a_broken_oracle_file_before_it_runs(tmp_path, capsys):
    from simulation.cli import main

    code = main(["--oracle-file", f"{tmp_path}/none.py:Gold", "--data-dir", str(tmp_path)])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "loop").exists()


def test_seeds_are_pooled_as_a_mean_with_a_t_interval():
    from simulation.cli import aggregate

    runs = [
        {
            "seed": i,
            "oracle": "vader",
            "method": "dpo",
            "win_rate_final": w,
            "kl_final": 1.0,
            "loop_minutes": None,
        }
        for i, w in enumerate([0.6, 0.7, 0.8])
    ]
    pooled = aggregate(runs)
    assert pooled["seeds"] == [0, 1, 2] and pooled["win_rate_final_mean"] == pytest.approx(0.7)
    low, high = pooled["win_rate_final_ci95"]  # mean +- t(0.975, 2) * sd / sqrt(3) = 0.7 +- 4.303 * 0.0577
    assert low == pytest.approx(0.4516, abs=1e-3) and high == pytest.approx(0.9484, abs=1e-3)
    assert pooled["kl_final_ci95"] == [1.0, 1.0]  # no spread, no width
    assert "loop_minutes_mean" not in pooled and pooled["runs"] == runs


# -- labelers ----------------------------------------------------------------------------------------
class FixedOracle:
    """Gold = the number written in the reply (so tests control it exactly)."""

    name, prompt_set, thumbs_threshold = "fixed", "none", 0.0

    def score(self, task, reply):
        return float(reply)


TASK = Task("t", "prompt")


def test_votes_follow_bradley_terry_probabilities():
    labeler = BradleyTerryLabeler(FixedOracle(), scale=2.0, rng=random.Random(7))
    n = 4000
    wins = sum(labeler.vote(TASK, "0.5", "0") == "a" for _ in range(n))
    expected = 1 / (1 + math.exp(-1.0))  # sigmoid(2 * 0.5) = 0.731
    assert abs(wins / n - expected) < 0.025
    assert labeler.stats.votes == n and labeler.stats.vote_agreement == pytest.approx(wins / n)
    # equal gold: a coin flip, and not counted as agreement or disagreement
    flips = sum(labeler.vote(TASK, "0.3", "0.3") == "a" for _ in range(2000))
    assert 0.45 < flips / 2000 < 0.55 and labeler.stats.votes == n


def test_labels_are_noisy_but_sharper_with_a_higher_scale():
    def agreement(scale: float) -> float:
        labeler = BradleyTerryLabeler(FixedOracle(), scale=scale, rng=random.Random(1))
        for _ in range(2000):
            labeler.vote(TASK, "0.2", "0")
        return labeler.stats.vote_agreement

    low, high = agreement(1.0), agreement(20.0)
    assert 0.5 < low < 0.6 and high > 0.95


def test_thumbs_are_bradley_terry_against_the_threshold():
    labeler = BradleyTerryLabeler(FixedOracle(), scale=4.0, rng=random.Random(3))
    ups = sum(labeler.thumbs(TASK, "0.25") == 1 for _ in range(4000))
    assert abs(ups / 4000 - 1 / (1 + math.exp(-1.0))) < 0.025
    assert labeler.stats.thumbs == 4000 and labeler.stats.thumbs_up == ups


def test_rankings_are_plackett_luce_with_bradley_terry_marginals():
    labeler = BradleyTerryLabeler(FixedOracle(), scale=3.0, rng=random.Random(11))
    replies = ["0.9", "0.5", "0.1", "0.0"]
    firsts = [0] * 4
    above = 0
    n = 4000
    for _ in range(n):
        order = labeler.rank(TASK, replies)
        assert sorted(order) == [0, 1, 2, 3]
        firsts[order[0]] += 1
        above += order.index(1) < order.index(2)
    weights = [math.exp(3.0 * float(r)) for r in replies]
    for i in range(4):  # P(first) of Plackett-Luce is the softmax of scale * gold
        assert abs(firsts[i] / n - weights[i] / sum(weights)) < 0.03
    assert abs(above / n - 1 / (1 + math.exp(-3.0 * 0.4))) < 0.03  # pairwise marginal = Bradley-Terry
    assert labeler.stats.rankings == n and labeler.stats.ranking_pairs == 6 * n


def test_a_fixed_seed_reproduces_the_labels():
    def labels(seed):
        lab = BradleyTerryLabeler(FixedOracle(), rng=random.Random(seed))
        return [lab.vote(TASK, "0.1", "0"), lab.thumbs(TASK, "0.1"), lab.rank(TASK, ["0", "0.2", "0.1"])]

    assert labels(5) == labels(5)


# -- the event mix -----------------------------------------------------------------------------------
def test_event_mix_counts_exactly_and_parses():
    mix = EventMix.parse("thumbs=0.4,votes=0.5,rankings=0.1")
    assert mix.counts(200) == {"thumbs": 80, "votes": 100, "rankings": 20}
    assert sum(mix.counts(7).values()) == 7
    assert mix.replies_needed(200) == 80 + 200 + 80
    assert EventMix.parse("votes=1").counts(5) == {"thumbs": 0, "votes": 5, "rankings": 0}
    with pytest.raises(ValueError, match="unknown event kind"):
        EventMix.parse("likes=1")
    with pytest.raises(ValueError, match="2 to 9"):
        EventMix(k=12)
    with pytest.raises(ValueError, match=">= 0"):
        EventMix(thumbs=0, votes=0, rankings=0)


# -- measurements and bookkeeping --------------------------------------------------------------------
def test_win_rate_counts_ties_half():
    assert win_rate([1, 0.5, 0], [0, 0.5, 1]) == pytest.approx(0.5)
    assert win_rate([1, 1, 1, 0], [0, 0, 0, 0]) == 0.875
    with pytest.raises(ValueError):
        win_rate([1], [])


def test_round_bookkeeping():
    before = LabelStats(
        votes=10, votes_agreeing=7, thumbs=5, thumbs_up=2, ranking_pairs=6, ranking_pairs_agreeing=4
    )
    after = LabelStats(
        votes=20, votes_agreeing=15, thumbs=9, thumbs_up=5, ranking_pairs=18, ranking_pairs_agreeing=13
    )
    fb = RoundFeedback(
        events={"thumbs": 4, "votes": 10, "rankings": 2}, replies=32, tokens=900, gold=[0.1, 0.3]
    )
    s = feedback_summary(fb, before, after)
    assert s["total_events"] == 16 and s["gold_seen"] == pytest.approx(0.2)
    assert s["pair_agreement"] == pytest.approx((8 + 9) / (10 + 12))
    assert s["thumbs_up_rate"] == pytest.approx(3 / 4)

    base = Measurement(version_id=1, gold=0.2, win_rate=0.5, kl=0.0, capability=0.75)
    final = Measurement(
        version_id=4, gold=0.61234, win_rate=0.8125, kl=3.14159, capability=0.725, proxy=1.5, proxy_base=0.5
    )
    assert final.proxy_gain == 1.0 and final.to_dict()["proxy_gain"] == 1.0
    assert summary(base, final, 27.3333, 21.004) == {
        "gold_base": 0.2,
        "gold_final": 0.6123,
        "win_rate_final": 0.8125,
        "kl_final": 3.1416,
        "capability_base": 75.0,
        "capability_final": 72.5,
        "minutes": 27.33,
        "loop_minutes": 21.0,
    }


def test_curve_starts_at_the_base_and_marks_rejected_rounds():
    result = {
        "base": {"gold": 0.1},
        "rounds": [
            {"round": 1, "decision": "deployed", "candidate": {"kl": 1.0, "gold": 0.3, "proxy_gain": 0.4}},
            {"round": 2, "decision": "rejected", "candidate": {"kl": 9.0, "gold": 0.2, "proxy_gain": 0.9}},
            {"round": 3, "decision": None, "candidate": None},
        ],
    }
    pts = curve(result)
    assert [p["round"] for p in pts] == [0, 1, 2]
    assert pts[0]["kl"] == 0 and pts[1]["deployed"] and not pts[2]["deployed"]
    assert pts[2]["gold_gain"] == pytest.approx(0.1)


def test_the_proxy_and_gold_axes_share_their_zero():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    twin = ax.twinx()
    ax.set_ylim(-0.13, 0.22)
    twin.set_ylim(-0.01, 0.23)
    align_zero(ax, twin)
    (lo1, hi1), (lo2, hi2) = ax.get_ylim(), twin.get_ylim()
    assert abs(-lo1 / (hi1 - lo1) - -lo2 / (hi2 - lo2)) < 1e-9  # zero at the same height
    assert lo1 <= -0.13 and hi1 >= 0.22 and lo2 <= -0.01 and hi2 >= 0.23  # no data cut off


def test_a_dpo_loss_variant_is_published_beside_dpo_not_over_it(tmp_path):
    """``--dpo-loss ipo`` writes vader-dpo-ipo.json, so DPO's own result stays; the plot's legend and
    the Dashboard's summary name the variant."""
    from playground.loop_panel import result_markdown
    from simulation.cli import publish
    from simulation.plots import loop_figure

    def result(label: str) -> dict:
        work = tmp_path / label
        work.mkdir()
        return {
            "oracle": "vader",
            "method": "dpo",
            "label": label,
            "config": {"work_dir": str(work)},
            "base": {"gold": 0.2, "capability": 0.5},
            "rounds": [{"round": 1, "decision": "undecided", "candidate": {"kl": 0.1, "gold": 0.3}}],
            "summary": {},
        }

    for label in ("dpo", "dpo-ipo"):
        publish(result(label), tmp_path / "loop")
    files = sorted(p.name for p in (tmp_path / "loop" / "results").iterdir())
    assert files == ["vader-dpo-ipo.json", "vader-dpo.json"]
    legend = {
        t.get_text()
        for t in loop_figure(load_results(tmp_path / "loop", "vader")).axes[0].get_legend().get_texts()
    }
    assert {"dpo", "dpo-ipo"} <= legend
    assert "method **dpo-ipo**" in result_markdown(result("dpo-ipo-again") | {"label": "dpo-ipo"})


def test_the_plot_draws_each_variant_in_its_own_colour_and_skips_pooled_seed_files(tmp_path):
    """A beta sweep's runs (dpo, dpo-beta0.05, dpo-beta0.5) are three lines of three colours; the
    ``--seeds`` pooled summary beside them (no base, no rounds) is not a line and does not break the plot."""
    from simulation.plots import loop_figure

    results = tmp_path / "loop" / "results"
    results.mkdir(parents=True)
    for i, label in enumerate(("dpo", "dpo-beta0.05", "dpo-beta0.5")):
        run = {
            "oracle": "vader",
            "method": "dpo",
            "label": label,
            "base": {"gold": 0.2},
            "rounds": [{"round": 1, "decision": "undecided", "candidate": {"kl": 0.1 * i, "gold": 0.3}}],
        }
        (results / f"vader-{label}.json").write_text(json.dumps(run))
    (results / "vader-dpo-seeds.json").write_text(
        json.dumps({"oracle": "vader", "method": "dpo", "runs": []})
    )
    loaded = load_results(tmp_path / "loop", "vader")
    assert sorted(r["label"] for r in loaded) == ["dpo", "dpo-beta0.05", "dpo-beta0.5"]
    lines = {line.get_label(): line.get_color() for line in loop_figure(loaded).axes[0].get_lines()
             if not line.get_label().startswith("_")}  # fmt: skip
    assert set(lines) == {"dpo", "dpo-beta0.05", "dpo-beta0.5"} and len(set(lines.values())) == 3
