"""What the Dashboard reads: battles between versions and presets, thumbs per version, totals."""

import pytest

from feedback_store import summary
from feedback_store.stats import Battle
from feedback_store.store import AssistantTurn
from tests.feedback_store.conftest import reply


def test_battles_between_versions_and_presets(tree):
    s, r = tree.store, tree.replies  # r0, r2, r4 from v1; r1, r3 from v2
    s.feedback.record_comparison(r[0], r[1], "alice", "b", mode="versions")
    s.feedback.record_comparison(r[0], r[3], "bob", "both_bad", mode="versions")  # counts as a tie
    s.feedback.record_comparison(r[0], r[2], "alice", "a", mode="samples")  # same version: no battle
    s.feedback.record_ranking([r[1], r[0], r[2]], "carol")  # v2 > v1, v2 > v1, (v1, v1) skipped
    v1, v2 = f"v{tree.v1} base", f"v{tree.v2} dpo-1"
    got = summary.battles(s, "version")
    assert got[:2] == [Battle(v1, v2, "b"), Battle(v1, v2, "tie")]
    assert got[2:] == [Battle(v2, v1, "a", pytest.approx(1 / 3)), Battle(v2, v1, "a", pytest.approx(1 / 3))]

    p = reply(s, tree.conversation_id, tree.u2, "Paris (cot).", tree.v1, preset_id="cot")
    s.feedback.record_comparison(p, r[0], "alice", "a", mode="presets")
    assert summary.battles(s, "preset") == [Battle("cot", summary.NO_PRESET, "a")]
    with pytest.raises(ValueError):
        summary.battles(s, "user")


def test_summarize_counts_and_rates(tree):
    s, r = tree.store, tree.replies
    assert summary.summarize(s, rounds=10).empty
    s.feedback.record_feedback(r[0], "alice", thumbs=1, score=6)
    s.feedback.record_feedback(r[2], "alice", thumbs=-1, score=2)
    s.feedback.record_feedback(r[1], "alice", thumbs=1)
    s.feedback.record_comparison(r[0], r[1], "alice", "a", mode="versions")
    got = summary.summarize(s, rounds=10)
    assert not got.empty
    assert got.totals["feedback"] == 3 and got.totals["thumbs_up"] == 2 and got.totals["comparisons"] == 1
    rates = {rate.key: (rate.successes, rate.n) for rate in got.thumbs_by_version}
    assert rates == {f"v{tree.v1} base": (1, 2), f"v{tree.v2} dpo-1": (1, 1)}
    assert got.mean_score_by_version[f"v{tree.v1} base"] == (4.0, 2)
    assert [row.player for row in got.leaderboards["version"]] == [f"v{tree.v1} base", f"v{tree.v2} dpo-1"]
    assert set(got.activity) == {"thumbs", "scores", "A/B votes"}


def test_imported_pairs_are_no_battles(store):
    conv = store.create_conversation("import:x", source="import")
    u = store.add_message(conv, "user", "q")
    a = store.add_assistant_message(conv, u, AssistantTurn(content="a", model_version_id=None))
    b = store.add_assistant_message(conv, u, AssistantTurn(content="b", model_version_id=None))
    store.feedback.record_comparison(a, b, "import:x", "a", mode="import")
    assert summary.battles(store, "version") == []
    assert summary.summarize(store, rounds=5).totals["imported_pairs"] == 1
