"""The Dashboard's "Content filter" section: how often the filter blocked or flagged, how often users
said it was wrong ("the filter was wrong" / "this should have been blocked"), the filter's precision
and recall as users see them (per category, with Wilson intervals), rate limits hit, and how many
users' feedback is kept out of training. Numbers from ``store.hygiene.moderation_stats()``.
"""

from __future__ import annotations

import gradio as gr

from feedback_store.hygiene import HygienePolicy, ModerationStats
from feedback_store.store import FeedbackStore
from playground.moderation.base import category_label

COLUMNS = ["category", "flagged", "reported wrong", "precision as users see it", "95% interval"]
EMPTY = "_Nothing blocked or flagged yet, no reports, no rate limits hit._"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def stats_markdown(s: ModerationStats) -> str:
    if s.empty:
        return EMPTY
    return (
        f"**{s.flagged}** messages blocked or flagged ({s.flagged_inputs} user messages, "
        f"{s.flagged_outputs} replies) · **{s.false_positive_reports}** “the filter was wrong” reports · "
        f"**{s.false_negative_reports}** “this should have been blocked” reports\n\n"
        f"Precision as users see it: **{_pct(s.precision)}** (flagged messages nobody reported as wrongly "
        f"flagged) · recall as users see it: **{_pct(s.recall)}** (flagged / flagged + reported misses). "
        "Both are upper bounds: not every mistake gets reported.\n\n"
        f"Rate limits hit: **{s.rate_limited}** times · users whose feedback is kept out of training: "
        f"**{s.excluded_users}**"
    )


def stats_table(s: ModerationStats) -> list[list]:
    rows = []
    for c in s.by_category:
        low, high = c.interval
        rows.append(
            [
                category_label(c.category),
                c.flagged,
                c.reported_wrong,
                _pct(c.precision),
                f"{low:.0%} – {high:.0%}",
            ]
        )
    return rows


class SafetyPanel:
    def __init__(self, store: FeedbackStore, policy: HygienePolicy | None = None):
        self.store = store
        self.policy = policy

    def refresh(self):
        s = self.store.hygiene.moderation_stats(self.policy)
        return stats_markdown(s), stats_table(s)

    def render(self) -> list[gr.components.Component]:
        with gr.Accordion("Content filter and abuse", open=False, elem_id="dashboard-safety"):
            summary = gr.Markdown(EMPTY, elem_id="safety-summary")
            table = gr.Dataframe(
                headers=COLUMNS, interactive=False, label="Per category", elem_id="safety-table"
            )
        return [summary, table]
