"""Pure dataset transformations (no model)."""

from dataclasses import replace

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
