"""Pure dataset transformations (no model)."""

from dataclasses import replace

import pytest

from tests.trainers.conftest import synthetic_pairs
from trainers.best_of_n import select_best
from trainers.data import (
    PreferencePair,
    PromptRecord,
    cap_per_user,
    dedupe,
    filter_items,
    is_heldout,
    preference_rows,
    split_heldout,
)
from trainers.kto import balanced_weights


def test_heldout_split_is_stable_and_by_prompt():
    pairs = synthetic_pairs(400)
    train, heldout = split_heldout(pairs, 0.1)
    assert len(train) + len(heldout) == 400
    assert 20 <= len(heldout) <= 60
    train2, heldout2 = split_heldout(list(reversed(pairs)), 0.1)
    assert {id(p) for p in heldout} == {id(p) for p in heldout2}
    # the same prompt always lands on the same side, whatever its replies
    p = pairs[0]
    twin = PreferencePair(prompt=p.prompt, chosen="x", rejected="y")
    assert is_heldout(p.prompt, 0.1) == is_heldout(twin.prompt, 0.1)


def test_dedupe_keeps_the_latest_repeat():
    p = synthetic_pairs(1)[0]
    older = PreferencePair(p.prompt, p.chosen, p.rejected, user_id="a", created_at="2026-01-01")
    newer = PreferencePair(p.prompt, p.chosen, p.rejected, user_id="a", created_at="2026-02-01")
    other_user = PreferencePair(p.prompt, p.chosen, p.rejected, user_id="b", created_at="2026-01-15")
    assert dedupe([older, newer, other_user]) == [newer, other_user]


def test_cap_per_user_limits_one_loud_user():
    loud = [
        PreferencePair(
            [{"role": "user", "content": f"q{i}"}], "a", "b", user_id="loud", created_at=f"{i:04d}"
        )
        for i in range(100)
    ]
    quiet = [
        PreferencePair([{"role": "user", "content": f"z{i}"}], "a", "b", user_id=f"q{i}") for i in range(20)
    ]
    kept = cap_per_user(loud + quiet, max_share=0.25, min_per_user=5)
    assert sum(1 for k in kept if k.user_id == "loud") == 30  # 25% of 120
    assert sum(1 for k in kept if k.user_id != "loud") == 20
    assert {k.created_at for k in kept if k.user_id == "loud"} == {f"{i:04d}" for i in range(70, 100)}


def test_filters_and_rows():
    pairs = synthetic_pairs(20)
    assert all(p.created_at >= "2026-11-10" for p in filter_items(pairs, since="2026-11-10"))
    assert {p.user_id for p in filter_items(pairs, user_ids={"u1"})} == {"u1"}
    row = preference_rows(pairs[:1], with_weight=True)[0]
    assert row["chosen"] == [{"role": "assistant", "content": pairs[0].chosen}] and row["weight"] == 1.0


def test_select_best_and_kto_weights():
    prompts = [
        PromptRecord([{"role": "user", "content": "a"}]),
        PromptRecord([{"role": "user", "content": "b"}]),
    ]
    best = select_best(prompts, [["x", "y", ""], ["", ""]], [[0.1, 0.9, 5.0], [1.0, 2.0]])
    assert [(b[1], b[2]) for b in best] == [("y", 0.9)]  # empty replies never win; all-empty prompts drop
    assert balanced_weights(30, 10) == (10 / 30, 1.0)
    assert balanced_weights(10, 30) == (1.0, 10 / 30)


def test_training_data_leaves_out_rate_limited_and_excluded_users(tmp_path):
    """Issue 9's hygiene reaches training: a rate-limited user's votes and an operator-excluded user's
    votes are not trained on by default; ``hygiene=False`` keeps them."""
    from feedback_store.store import FeedbackStore
    from tests.trainers.conftest import seed_feedback
    from trainers.run import TrainRequest, load_examples

    store = FeedbackStore(tmp_path / "db.sqlite")
    seed_feedback(store, n_prompts=24, thumbs=False)  # users user0..user5, 4 votes each
    store.hygiene.record_event("rate_limited", "user1", scope="feedback")
    store.hygiene.set_user_flag("user2", excluded=True, reason="spam", set_by="admin")
    req = TrainRequest(method="dpo", db_path=tmp_path / "db.sqlite", data_dir=tmp_path, heldout_fraction=0.0)

    def users(**kw):
        train, heldout = load_examples(store, replace(req, **kw))
        return {p.user_id for p in train + heldout}

    assert users() == {"user0", "user3", "user4", "user5"}
    assert users(hygiene=False) == {f"user{i}" for i in range(6)}
    store.hygiene.set_user_flag("user1", excluded=False, reason="false alarm", set_by="admin")  # trusted
    assert "user1" in users()
    store.close()


def ranking(rid: int, k: int, user: str = "r", created: str = "2026-11-01") -> list[PreferencePair]:
    """The C(K,2) pairs of one ranking of K replies, weighted 1/C(K,2), as the store expands them."""
    prompt = [{"role": "user", "content": f"ranked {rid}"}]
    n = k * (k - 1) // 2
    return [
        PreferencePair(
            prompt,
            f"reply {i}",
            f"reply {j}",
            source="ranking",
            user_id=user,
            created_at=created,
            weight=1 / n,
            chosen_message_id=100 * rid + i,
            rejected_message_id=100 * rid + j,
            ranking_id=rid,
        )
        for i in range(k)
        for j in range(i + 1, k)
    ]


def test_cap_per_user_counts_a_ranking_once():
    ranker = ranking(1, 9, user="ranker")  # 36 pairs, one vote
    voters = [
        PreferencePair([{"role": "user", "content": f"v{i}"}], "a", "b", user_id=f"v{i}") for i in range(3)
    ]
    kept = cap_per_user(ranker + voters, max_share=0.25, min_per_user=1)
    assert len(kept) == 39  # 4 votes; the ranking is 1 of them, under any cap: all of it stays
    many = [p for rid in range(10) for p in ranking(rid, 4, user="ranker", created=f"2026-11-{rid + 1:02d}")]
    kept = cap_per_user(many + voters, max_share=0.25, min_per_user=1)  # 13 votes: at most 3 per user
    assert {p.ranking_id for p in kept if p.user_id == "ranker"} == {7, 8, 9}  # the latest, whole
    assert sum(1 for p in kept if p.user_id == "ranker") == 18


def test_vote_epochs_gives_dpo_one_pair_per_ranking_per_epoch():
    from trainers.data import vote_count, vote_epochs

    singles = synthetic_pairs(5)
    pairs = singles + ranking(1, 4) + ranking(2, 3)
    assert vote_count(pairs) == 7
    one = vote_epochs(pairs, epochs=1, seed=3)
    assert len(one) == 7 and sum(1 for p in one if p.ranking_id == 1) == 1
    assert all(p.weight == 1.0 for p in one)
    six = vote_epochs(pairs, epochs=6, seed=3)
    assert len(six) == 42
    drawn = [(p.chosen, p.rejected) for p in six if p.ranking_id == 1]
    assert len(set(drawn)) == 6  # six epochs see all six pairs of the 4-ranking, none twice
    assert vote_epochs(pairs, epochs=6, seed=3) == six  # deterministic for a seed
    assert len(vote_epochs(pairs, epochs=1.5, seed=3)) == 7 + 4  # half of the second epoch (3.5 -> 4)
    with pytest.raises(ValueError):
        vote_epochs(pairs, epochs=0)


def test_one_pair_per_vote_is_stable_as_data_grows():
    from trainers.data import one_pair_per_vote

    pairs = synthetic_pairs(3) + ranking(1, 5)
    kept = one_pair_per_vote(pairs)
    assert len(kept) == 4 and kept[:3] == pairs[:3] and kept[3].weight == 1.0
    grown = one_pair_per_vote(ranking(7, 3) + pairs + synthetic_pairs(2, seed=9))
    assert [p for p in grown if p.ranking_id == 1] == [kept[3]]


def test_heldout_pairs_count_a_ranking_once(tmp_path):
    """The gate's and the reward model's held-out pairs come from ``load_examples``: one pair per
    ranking, weight 1, so a ranking of 9 is one held-out vote, not 36."""
    from feedback_store.store import AssistantTurn, FeedbackStore
    from trainers.run import TrainRequest, load_examples

    store = FeedbackStore(tmp_path / "db.sqlite")
    base = store.versions.ensure_base("m.gguf")
    conv = store.create_conversation("alice", source="rank")
    q = store.add_message(conv, "user", "Rank these.")
    ids = [
        store.add_assistant_message(conv, q, AssistantTurn(content=f"reply {i}", model_version_id=base.id))
        for i in range(9)
    ]
    store.feedback.record_ranking(ids, "alice")
    req = TrainRequest(method="dpo", db_path=tmp_path / "db.sqlite", data_dir=tmp_path, heldout_fraction=1.0)
    train, heldout = load_examples(store, req)
    assert train == [] and len(heldout) == 1 and heldout[0].weight == 1.0
    train, heldout = load_examples(store, replace(req, heldout_fraction=0.0))
    assert len(train) == 36 and heldout == []  # training keeps every pair, each weighted 1/36
    assert all(p.weight == pytest.approx(1 / 36) for p in train)
    store.close()
