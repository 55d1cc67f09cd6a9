"""What the Dashboard shows, read from the database and computed with ``feedback_store.stats``:
totals, activity over time, thumbs-up rate per model version (Wilson intervals), and for model
versions and for presets the battles, win rates and Bradley-Terry leaderboards (bootstrap intervals).

Battles come from A/B votes ("both bad" counts as a tie, as in Chatbot Arena) and from rankings
(each of a K-ranking's pairs weighs 1/C(K,2); two tied replies are a tie, half a win each), wherever the two replies differ in what is rated:
two samples of one version are no battle between versions. Imported pairs have no version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feedback_store import stats
from feedback_store.feedback import pair_weight
from feedback_store.store import FeedbackStore

ENTITIES = ("version", "preset")
NO_PRESET = "(no preset)"


@dataclass(frozen=True)
class Summary:
    totals: dict[str, int]
    activity: dict[str, list[tuple[str, int]]]
    thumbs_by_version: list[stats.Rate]
    mean_score_by_version: dict[str, tuple[float, int]]  # label -> (mean 1-7 score, n)
    battles: dict[str, list[stats.Battle]] = field(default_factory=dict)  # entity -> battles
    win_rates: dict[str, list[stats.WinRate]] = field(default_factory=dict)
    leaderboards: dict[str, list[stats.LeaderboardRow]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(
            self.totals.get(k)
            for k in ("feedback", "demonstrations", "comparisons", "rankings", "imported_pairs")
        )


def version_labels(store: FeedbackStore) -> dict[int, str]:
    return {v.id: f"v{v.id} {v.name}" for v in store.versions.list()}


def _player(row: dict, prefix: str, entity: str, labels: dict[int, str]) -> str | None:
    if entity == "version":
        vid = row[f"{prefix}_version"]
        return None if vid is None else labels.get(vid, f"v{vid}")
    return row[f"{prefix}_preset"] or NO_PRESET


def battles(store: FeedbackStore, entity: str) -> list[stats.Battle]:
    """Every pairwise outcome between two different versions (or presets), oldest first."""
    if entity not in ENTITIES:
        raise ValueError(f"entity must be one of {ENTITIES}")
    labels = version_labels(store)
    db = store.db
    out: list[stats.Battle] = []
    rows = db.query(
        "SELECT c.vote, ma.model_version_id AS a_version, mb.model_version_id AS b_version, "
        "ma.preset_id AS a_preset, mb.preset_id AS b_preset FROM comparisons c "
        "JOIN messages ma ON ma.id = c.message_a JOIN messages mb ON mb.id = c.message_b "
        "WHERE c.mode NOT IN ('import', 'ai') ORDER BY c.updated_at, c.id"
    )
    for r in rows:
        a, b = _player(r, "a", entity, labels), _player(r, "b", entity, labels)
        if a is None or b is None or a == b:
            continue
        outcome = {"a": "a", "b": "b", "tie": "tie", "both_bad": "tie"}[r["vote"]]
        out.append(stats.Battle(a, b, outcome))
    items: dict[int, list[dict]] = {}
    for r in db.query(
        "SELECT i.ranking_id, COALESCE(i.rank, i.position) AS rank, m.model_version_id AS x_version, "
        "m.preset_id AS x_preset FROM ranking_items i "
        "JOIN messages m ON m.id = i.message_id JOIN rankings r ON r.id = i.ranking_id "
        "ORDER BY r.updated_at, i.ranking_id, i.position"
    ):
        items.setdefault(r["ranking_id"], []).append(r)
    for ordered in items.values():
        weight = pair_weight(len(ordered))  # all C(K,2) pairs, tied ones as ties: one vote in total
        ranks = [x["rank"] for x in ordered]
        for better, worse, tied in stats.tied_ranking_pairs(list(range(len(ordered))), ranks):
            a = _player(ordered[better], "x", entity, labels)
            b = _player(ordered[worse], "x", entity, labels)
            if a is not None and b is not None and a != b:
                out.append(stats.Battle(a, b, "tie" if tied else "a", weight))
    return out


def summarize(store: FeedbackStore, *, rounds: int = 200, seed: int = 0, bucket: str = "day") -> Summary:
    db = store.db
    labels = version_labels(store)
    totals = {
        "replies": db.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").fetchone()[0],
        "feedback": db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0],
        "thumbs_up": db.execute("SELECT COUNT(*) FROM feedback WHERE thumbs = 1").fetchone()[0],
        "thumbs_down": db.execute("SELECT COUNT(*) FROM feedback WHERE thumbs = -1").fetchone()[0],
        "scores": db.execute("SELECT COUNT(*) FROM feedback WHERE score IS NOT NULL").fetchone()[0],
        "demonstrations": db.execute("SELECT COUNT(*) FROM demonstrations").fetchone()[0],
        "comparisons": db.execute(
            "SELECT COUNT(*) FROM comparisons WHERE mode NOT IN ('import', 'ai')"
        ).fetchone()[0],
        "ai_pairs": db.execute("SELECT COUNT(*) FROM comparisons WHERE mode = 'ai'").fetchone()[0],
        "imported_pairs": db.execute("SELECT COUNT(*) FROM comparisons WHERE mode = 'import'").fetchone()[0],
        "rankings": db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0],
    }
    events: list[tuple[str, str]] = []
    for kind, query in (
        ("thumbs", "SELECT updated_at FROM feedback WHERE thumbs IS NOT NULL"),
        ("scores", "SELECT updated_at FROM feedback WHERE score IS NOT NULL"),
        ("better answers", "SELECT updated_at FROM demonstrations"),
        ("A/B votes", "SELECT updated_at FROM comparisons WHERE mode NOT IN ('import', 'ai')"),
        ("rankings", "SELECT updated_at FROM rankings"),
    ):
        events.extend((kind, row[0]) for row in db.execute(query))
    thumbs = [
        (labels.get(r[0], f"v{r[0]}"), r[1] == 1)
        for r in db.execute(
            "SELECT m.model_version_id, f.thumbs FROM feedback f JOIN messages m ON m.id = f.message_id "
            "WHERE f.thumbs IS NOT NULL AND m.model_version_id IS NOT NULL"
        )
    ]
    scores = {
        labels.get(r[0], f"v{r[0]}"): (float(r[1]), int(r[2]))
        for r in db.execute(
            "SELECT m.model_version_id, AVG(f.score), COUNT(*) FROM feedback f JOIN messages m ON m.id = f.message_id "
            "WHERE f.score IS NOT NULL AND m.model_version_id IS NOT NULL GROUP BY m.model_version_id"
        )
    }
    summary = Summary(totals, stats.counts_over_time(events, bucket=bucket), stats.rates(thumbs), scores)
    for entity in ENTITIES:
        found = battles(store, entity)
        summary.battles[entity] = found
        summary.win_rates[entity] = stats.win_rates(found)
        summary.leaderboards[entity] = stats.bootstrap_bradley_terry(found, rounds=rounds, seed=seed)
    return summary
