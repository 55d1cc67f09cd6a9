"""Canary battles in the store: the anytime-valid rule's error rates (measured by simulation with
``benchmarks.canary``, which prints them), the tally from real comparison rows (sides shuffled, per-user cap, deletions honoured), and the decisions
it applies to the version registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from threading import Barrier, Thread

import pytest

from benchmarks.canary import anytime_rule, simulate, wilson_rule
from feedback_store.canary import anytime_interval, tally_votes
from feedback_store.records import AssistantTurn, StoreError
from feedback_store.stats import wilson_interval

product_rule = anytime_rule()  # the product's rule at alpha 0.05


def test_the_interval_is_the_whole_range_without_votes_and_shrinks_around_the_rate():
    assert anytime_interval(0, 0) == (0.0, 1.0)
    widths = []
    for n in (10, 40, 160, 640):
        low, high = anytime_interval(int(0.7 * n), n - int(0.7 * n))
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    # wider than the fixed-n Wilson interval: the price of looking after every vote
    w_low, w_high = wilson_interval(70, 100)
    low, high = anytime_interval(70, 30)
    assert low < w_low and high > w_high
    with pytest.raises(ValueError):
        anytime_interval(-1, 3)


def test_error_rates_of_the_rule_looked_at_after_every_vote():
    # No difference: the candidate is deployed or rejected by chance in at most alpha of the canaries
    # (Ville's inequality bounds the whole sequence of looks; measured: 3.4%).
    null = simulate(0.5, product_rule)
    assert null["deploy"] + null["reject"] <= 0.05
    worse = simulate(0.45, product_rule)
    assert worse["deploy"] <= 0.01
    # A clearly better candidate (users prefer it 70:30) is deployed within the 200-vote budget.
    better = simulate(0.7, product_rule)
    assert better["deploy"] >= 0.95 and better["reject"] == 0
    assert simulate(0.3, product_rule)["reject"] >= 0.95


def test_an_ordinary_interval_peeked_at_after_every_vote_would_decide_by_chance():
    """Why the rule needs an anytime-valid interval: the Wilson interval, valid for one look, crosses
    0.5 by chance in far more than 5% of the canaries when it is looked at after every vote."""
    null = simulate(0.5, wilson_rule, trials=500)
    assert null["deploy"] + null["reject"] > 0.2


def test_tally_counts_each_users_first_votes_only():
    votes = [("ann", "win")] * 30 + [("bob", "loss"), ("bob", "tie"), ("cy", "both_bad")]
    t = tally_votes(votes, per_user=5, alpha=0.05)
    assert (t.wins, t.losses, t.ties, t.both_bad, t.voters, t.capped) == (5, 1, 1, 1, 3, 25)
    assert t.verdict() == "unclear"  # one eager voter cannot decide


# -- the repository, on a real database ------------------------------------------------------------


@pytest.fixture
def versions(store, tmp_path):
    base = store.versions.ensure_base("m.gguf")
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"GGUF")  # deploy checks that the file is there; nothing loads it here
    candidate = store.versions.register_candidate(
        "m.gguf", gguf_adapter_path=adapter, parent_id=base.id, method="dpo"
    )
    return base, candidate


def _start(store, base, candidate, **kw):
    args = dict(
        share=0.3, max_votes=40, hours=24, per_user=20, alpha=0.05, fallback="deploy", auto_deploy=True
    )
    args.update(kw)
    return store.canaries.start(candidate.id, base.id, **args)


def battle(store, base, candidate, user: str, winner: str, *, candidate_first: bool) -> None:
    """One canary battle as the Compare tab stores it: two replies to one prompt, one per version."""
    conv = store.create_conversation(user, source="compare")
    q = store.add_message(conv, "user", "Hello?")
    first, second = (candidate, base) if candidate_first else (base, candidate)
    a = store.add_assistant_message(conv, q, AssistantTurn(content="A", model_version_id=first.id))
    b = store.add_assistant_message(conv, q, AssistantTurn(content="B", model_version_id=second.id))
    if winner in ("tie", "both_bad"):
        vote = winner
    else:
        vote = "a" if (winner == "candidate") == candidate_first else "b"
    store.feedback.record_comparison(a, b, user, vote, mode="canary")


def test_the_tally_reads_the_candidates_side_whichever_side_it_was_shown_on(store, versions):
    base, candidate = versions
    battle(store, base, candidate, "early", "candidate", candidate_first=True)  # before the canary
    canary = _start(store, base, candidate)
    for i in range(6):
        battle(store, base, candidate, f"u{i}", "candidate", candidate_first=i % 2 == 0)
    battle(store, base, candidate, "u7", "deployed", candidate_first=True)
    battle(store, base, candidate, "u8", "tie", candidate_first=False)
    # an ordinary battle between the same versions does not count
    conv = store.create_conversation("u9", source="compare")
    q = store.add_message(conv, "user", "Hi")
    a = store.add_assistant_message(conv, q, AssistantTurn(content="x", model_version_id=candidate.id))
    b = store.add_assistant_message(conv, q, AssistantTurn(content="y", model_version_id=base.id))
    store.feedback.record_comparison(a, b, "u9", "a", mode="versions")
    t = store.canaries.tally(canary)
    assert (t.wins, t.losses, t.ties, t.voters) == (6, 1, 1, 8)
    assert store.canaries.user_votes(canary, "u0") == 1


def test_deleted_votes_stop_counting(store, versions):
    base, candidate = versions
    canary = _start(store, base, candidate)
    for user in ("keep", "leave"):
        battle(store, base, candidate, user, "candidate", candidate_first=True)
    store.conversations.delete_user_data("leave", actor="leave")
    assert store.canaries.tally(canary).wins == 1


def test_settle_deploys_a_candidate_the_users_prefer(store, versions):
    base, candidate = versions
    _start(store, base, candidate)
    ended = None
    for i in range(40):
        battle(store, base, candidate, f"u{i}", "candidate", candidate_first=i % 2 == 1)
        ended = store.canaries.settle()
        if ended:
            break
    assert ended is not None and ended.decision == "deployed" and i + 1 < 40
    assert store.versions.deployed("m.gguf").id == candidate.id
    assert store.canaries.live() is None and ended.tally["wins"] == i + 1
    assert "users prefer the candidate" in ended.reasons[0]


def test_settle_rejects_a_candidate_the_users_dislike(store, versions):
    base, candidate = versions
    _start(store, base, candidate)
    for i in range(20):
        battle(store, base, candidate, f"u{i}", "deployed", candidate_first=True)
        if ended := store.canaries.settle():
            break
    assert ended.decision == "rejected"
    assert store.versions.get(candidate.id).status == "rejected"
    assert store.versions.deployed("m.gguf").id == base.id


@pytest.mark.parametrize(
    ("fallback", "auto_deploy", "expected"),
    [("deploy", True, "deployed"), ("deploy", False, "awaiting_approval"), ("undecided", True, "undecided")],
)
def test_when_the_budget_runs_out_the_offline_gates_decision_stands(
    store, versions, fallback, auto_deploy, expected
):
    base, candidate = versions
    canary = _start(store, base, candidate, max_votes=4, fallback=fallback, auto_deploy=auto_deploy)
    for i, winner in enumerate(["candidate", "deployed", "candidate"]):
        battle(store, base, candidate, f"u{i}", winner, candidate_first=True)
        assert store.canaries.settle() is None
    # the time budget: nothing is decided before it, the fallback after it
    late = datetime.fromisoformat(canary.ends_at) + timedelta(seconds=1)
    ended = store.canaries.settle(now=late)
    assert ended.decision == expected and "time budget" in ended.reasons[0]
    deployed = store.versions.deployed("m.gguf").id
    assert deployed == (candidate.id if expected == "deployed" else base.id)
    assert store.versions.get(candidate.id).status == ("deployed" if expected == "deployed" else "candidate")


def test_the_vote_budget_ends_an_unclear_canary(store, versions):
    base, candidate = versions
    _start(store, base, candidate, max_votes=4, fallback="undecided")
    for i, winner in enumerate(["candidate", "deployed", "candidate", "deployed"]):
        battle(store, base, candidate, f"u{i}", winner, candidate_first=False)
    ended = store.canaries.settle()
    assert ended.decision == "undecided" and "vote budget of 4" in ended.reasons[0]


def test_a_manual_deploy_cancels_the_canary_and_its_run_stays_undecided(store, versions):
    base, candidate = versions
    run = store.runs.start("ui", {})
    store.runs.finish(run.id, "succeeded", decision="canary", reasons=["gate: passed"])
    _start(store, base, candidate, training_run_id=run.id)
    other = store.versions.register_candidate("m.gguf", gguf_adapter_path=candidate.gguf_adapter_path)
    store.versions.deploy(other.id)
    ended = store.canaries.settle()
    assert ended.decision == "cancelled"
    assert store.runs.get(run.id).decision == "undecided"
    assert store.runs.get(run.id).reasons[-1].startswith("canary: the deployed version changed")


def test_a_canary_waits_for_its_cycle_to_record_its_own_decision(store, versions):
    base, candidate = versions
    run = store.runs.start("schedule", {})  # still running: it has not written "canary" yet
    _start(store, base, candidate, training_run_id=run.id, max_votes=1)
    battle(store, base, candidate, "u", "candidate", candidate_first=True)
    assert store.canaries.settle() is None
    store.runs.finish(run.id, "succeeded", decision="canary")
    assert store.canaries.settle().decision == "deployed"
    assert store.runs.get(run.id).decision == "deployed"


def test_the_canarys_decision_becomes_its_runs(store, versions):
    base, candidate = versions
    run = store.runs.start("schedule", {})
    store.runs.finish(run.id, "succeeded", decision="canary", reasons=["gate: passed"])
    _start(store, base, candidate, training_run_id=run.id, max_votes=1, fallback="undecided")
    battle(store, base, candidate, "u", "tie", candidate_first=True)
    store.canaries.settle(now=datetime.now(UTC) + timedelta(days=2))
    assert store.runs.get(run.id).decision == "undecided"


def test_one_live_canary_and_bad_settings_refused(store, versions):
    base, candidate = versions
    with pytest.raises(StoreError, match="share"):
        _start(store, base, candidate, share=0)
    with pytest.raises(StoreError, match="fallback"):
        _start(store, base, candidate, fallback="reject")
    _start(store, base, candidate)
    with pytest.raises(StoreError, match="another canary is live"):
        _start(store, base, candidate)


def test_two_settles_at_once_deploy_once(store, versions):
    base, candidate = versions
    _start(store, base, candidate)
    for i in range(12):
        battle(store, base, candidate, f"u{i}", "candidate", candidate_first=True)
    barrier, results = Barrier(2), []

    def settle():
        barrier.wait()
        results.append(store.canaries.settle())

    threads = [Thread(target=settle) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is not None for r in results) == [False, True]
    events = store.db.execute(
        "SELECT COUNT(*) FROM deployment_events WHERE actor = 'canary' AND version_id = ?", [candidate.id]
    ).fetchone()[0]
    assert events == 1


def test_a_deploy_that_fails_leaves_the_candidate_undecided(store, versions, tmp_path):
    base, candidate = versions
    _start(store, base, candidate)
    for i in range(12):
        battle(store, base, candidate, f"u{i}", "candidate", candidate_first=True)
    (tmp_path / "adapter.gguf").unlink()
    ended = store.canaries.settle()
    assert ended.decision == "undecided" and "adapter file(s) missing" in ended.reasons[-1]
    assert store.versions.deployed("m.gguf").id == base.id
