"""The Dashboard tab: what the users said, as plots and tables (counts over time, thumbs-up rate per
model version with Wilson intervals, win rates, Bradley-Terry leaderboards of versions and presets with
bootstrap intervals), the content filter's record (``playground.safety_dashboard``), the admins'
review queue of reports on the filter (``playground.review_queue``) and the export downloads. The numbers come from ``feedback_store.summary``; this module only draws them. It refreshes
when the tab is opened and with its Refresh button. Exports hold every user's data: admins only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
from matplotlib.figure import Figure

from feedback_store import exports
from feedback_store.stats import LeaderboardRow, Rate, WinRate
from feedback_store.store import FeedbackStore
from feedback_store.summary import Summary, summarize
from playground.review_queue import ReviewQueue
from playground.safety import Safety
from playground.safety_dashboard import SafetyPanel

EMPTY = "**No feedback yet.** Rate replies in the Chat tab, vote in Compare, or rank in Rank; the statistics appear here."
BOARD_COLUMNS = ["rank", "name", "rating", "95% interval", "battles", "win rate (ties ½)"]
EXPORT_FILES = {
    "preferences": "preferences.jsonl",
    "kto": "kto.jsonl",
    "sft": "sft.jsonl",
    "raw": "raw_tables.jsonl",
}


def activity_figure(activity: dict[str, list[tuple[str, int]]]) -> Figure | None:
    if not activity:
        return None
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    days = [d for d, _ in next(iter(activity.values()))]
    bottom = [0] * len(days)
    for kind, series in activity.items():  # stacked: every kind stays visible on a one-day history
        counts = [c for _, c in series]
        ax.bar(days, counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Feedback per day")
    ax.set_ylabel("events")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=45, labelsize="small")
    return fig


def thumbs_figure(rates: list[Rate]) -> Figure | None:
    if not rates:
        return None
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    x = range(len(rates))
    ax.bar(x, [r.rate for r in rates], color="tab:green", alpha=0.7)
    ax.errorbar(
        x,
        [r.rate for r in rates],
        yerr=[[r.rate - r.low for r in rates], [r.high - r.rate for r in rates]],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    for i, r in enumerate(rates):
        ax.annotate(f"n={r.n:g}", (i, 0.02), ha="center", fontsize="small")
    ax.set_xticks(list(x), [str(r.key) for r in rates], fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("thumbs-up rate")
    ax.set_title("Thumbs up per model version (95% Wilson interval)")
    return fig


def leaderboard_figure(board: list[LeaderboardRow], title: str) -> Figure | None:
    if not board:
        return None
    rows = list(reversed(board))  # best at the top
    fig = Figure(figsize=(7, 0.6 + 0.45 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = range(len(rows))
    ax.errorbar(
        [r.rating for r in rows],
        list(y),
        xerr=[[r.rating - r.low for r in rows], [r.high - r.rating for r in rows]],
        fmt="o",
        capsize=4,
    )
    ax.set_yticks(list(y), [r.player for r in rows], fontsize="small")
    ax.axvline(1000, color="grey", linewidth=0.5)
    ax.set_xlabel("Bradley-Terry rating (Elo scale, 95% bootstrap interval)")
    ax.set_title(title)
    return fig


def board_table(board: list[LeaderboardRow], win_rates: list[WinRate]) -> list[list]:
    rate = {w.player: w.rate for w in win_rates}
    return [
        [
            r.rank,
            r.player,
            round(r.rating),
            f"{r.low:.0f} – {r.high:.0f}",
            round(r.battles, 2),
            f"{rate.get(r.player, 0):.0%}",
        ]
        for r in board
    ]


def totals_markdown(summary: Summary) -> str:
    t = summary.totals
    return (
        f"**{t['feedback']}** rated replies ({t['thumbs_up']} 👍, {t['thumbs_down']} 👎, {t['scores']} scores) · "
        f"**{t['demonstrations']}** better answers · **{t['comparisons']}** A/B votes · "
        f"**{t['rankings']}** rankings · {t['imported_pairs']} imported pairs · {t.get('ai_pairs', 0)} AI-labelled "
        f"pairs · {t['replies']} replies stored"
    )


class DashboardTab:
    def __init__(self, store: FeedbackStore, *, safety: Safety, bootstrap_rounds: int = 200):
        self.store = store
        self.bootstrap_rounds = bootstrap_rounds
        self.safety = safety  # required: exports are for admins, so no tab exists without the check
        self.safety_panel = SafetyPanel(store)
        self.review_queue = ReviewQueue(store, safety)

    def refresh(self):
        summary = summarize(self.store, rounds=self.bootstrap_rounds)
        if summary.empty:
            return (EMPTY, None, None, None, [], None, [])
        versions = summary.leaderboards["version"]
        presets = summary.leaderboards["preset"]
        no_battles = "no battles yet: votes between different {} appear here"
        return (
            totals_markdown(summary),
            activity_figure(summary.activity),
            thumbs_figure(summary.thumbs_by_version),
            leaderboard_figure(versions, "Model versions") if versions else None,
            board_table(versions, summary.win_rates["version"])
            or [[None, no_battles.format("versions"), None, "", None, ""]],
            leaderboard_figure(presets, "Presets") if presets else None,
            board_table(presets, summary.win_rates["preset"])
            or [[None, no_battles.format("presets"), None, "", None, ""]],
        )

    def export(self, fmt: str, request: gr.Request | None = None) -> str:
        if why := self.safety.access.admin_refusal(request, "Exporting everybody's data"):
            raise gr.Error(why)
        out = Path(tempfile.mkdtemp(prefix="playground-export-")) / EXPORT_FILES[fmt]
        n = exports.export(self.store, fmt, out)
        gr.Info(f"Exported {n} rows ({fmt}).")
        return str(out)

    def _exporter(self, fmt: str):
        def handler(request: gr.Request) -> str | None:  # Gradio passes the request by annotation
            return self.export(fmt, request)

        return handler

    def render(self, tab: gr.Tab | None = None) -> None:
        with gr.Row():
            totals = gr.Markdown(EMPTY, elem_id="dashboard-totals")
            refresh = gr.Button("Refresh", size="sm", scale=0, elem_id="dashboard-refresh")
        with gr.Row():
            activity = gr.Plot(label="Activity", elem_id="dashboard-activity")
            thumbs = gr.Plot(label="Thumbs up", elem_id="dashboard-thumbs")
        with gr.Row():
            versions_plot = gr.Plot(label="Leaderboard: model versions")
            presets_plot = gr.Plot(label="Leaderboard: presets")
        versions_table = gr.Dataframe(
            headers=BOARD_COLUMNS, interactive=False, label="Model versions", elem_id="board-versions"
        )
        presets_table = gr.Dataframe(
            headers=BOARD_COLUMNS, interactive=False, label="Presets", elem_id="board-presets"
        )
        safety_outputs = self.safety_panel.render()
        self.review_queue.render([refresh.click, *([tab.select] if tab is not None else [])])
        with gr.Accordion("Export the data (admins)", open=False):
            gr.Markdown(
                "TRL formats: **preferences** (prompt / chosen / rejected: DPO, reward model), **KTO** "
                "(prompt / completion / label from thumbs, scores and flags), **SFT** (better answers), and the **raw** tables. "
                "The same from a shell: `python launch.py export --format preferences --out prefs.jsonl`."
            )
            with gr.Row():
                buttons = {
                    fmt: gr.Button(f"Export {fmt}", size="sm", elem_id=f"export-{fmt}")
                    for fmt in EXPORT_FILES
                }
            download = gr.File(label="Download", interactive=False, elem_id="export-file")

        outputs = [totals, activity, thumbs, versions_plot, versions_table, presets_plot, presets_table]
        refresh.click(self.refresh, None, outputs)
        refresh.click(self.safety_panel.refresh, None, safety_outputs)
        if tab is not None:
            tab.select(self.refresh, None, outputs)
            tab.select(self.safety_panel.refresh, None, safety_outputs)
        for fmt, button in buttons.items():
            button.click(self._exporter(fmt), None, download, api_name=f"export_{fmt}")
