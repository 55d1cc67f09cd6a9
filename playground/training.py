"""The Training tab: the iterative-deployment loop at a glance and in your hands.

Scheduler state and next run, "Run training now", the running cycle's stage, progress and log tail
(refreshed every few seconds while a cycle runs), the history of runs with their gate decisions and
reasons, the evidence behind the latest decision (each check's estimate and interval: deploy,
reject, or undecided when it needs more evidence), the live canary's tally (the users' votes on a
candidate, with its interval and rule), the model versions with their metrics, plots of those metrics across versions, and deploy /
rollback. Deploying or rolling back changes the registry; the server's version watcher hot-swaps within
seconds and streams already running finish on the old version.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from feedback_store.canary import Canary, CanaryRepository
from feedback_store.runs import TrainingRun
from feedback_store.stats import rates
from feedback_store.store import FeedbackStore, StoreError
from feedback_store.versions import VersionRegistry

log = logging.getLogger(__name__)

RUN_COLUMNS = [
    "run",
    "trigger",
    "status",
    "started",
    "seconds",
    "method",
    "candidate",
    "decision",
    "reasons / error",
]
VERSION_COLUMNS = [
    "id",
    "name",
    "status",
    "method",
    "parent",
    "RM accuracy",
    "win rate",
    "KL",
    "thumbs up",
    "created",
]
LOG_TAIL_LINES = 40


class SchedulerStateView(Protocol):
    """What the tab reads of the scheduler's state (``trainers.scheduler.SchedulerState``)."""

    @property
    def schedule(self) -> str: ...
    @property
    def next_run(self) -> str | None: ...
    @property
    def min_new_feedback(self) -> int: ...
    @property
    def new_feedback(self) -> int: ...
    @property
    def auto_deploy(self) -> bool: ...
    @property
    def policy(self) -> str: ...
    @property
    def canary(self) -> str: ...


class SchedulerControl(Protocol):
    """The training scheduler as this tab uses it; launch.py hands in ``trainers.scheduler``'s."""

    def state(self) -> SchedulerStateView: ...
    def trigger_now(self, trigger: str = "manual") -> str: ...
    def stop_running(self) -> str: ...


def _f(value: Any, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _duration(run: TrainingRun) -> str:
    from datetime import datetime

    end = run.finished_at or run.updated_at
    try:
        return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(run.started_at)).total_seconds():.0f}"
    except ValueError:
        return ""


def runs_table(runs: list[TrainingRun]) -> list[list[Any]]:
    rows = []
    for r in runs:
        why = r.error.splitlines()[0] if r.error else "; ".join(r.reasons)
        rows.append(
            [
                r.id,
                r.trigger,
                r.status,
                r.started_at[:19].replace("T", " "),
                _duration(r),
                r.metrics.get("method", ""),
                r.candidate_version_id or "",
                r.decision or "",
                why[:300],
            ]
        )
    return rows


def gate_markdown(runs: list[TrainingRun]) -> str:
    """The latest gate decision and its evidence: each check's estimate, interval and verdict."""
    run = next((r for r in runs if r.metrics.get("gate_checks")), None)
    if run is None:
        return ""
    lines = [
        f"**Gate, run {run.id}: {html.escape(run.decision or '')}** (candidate v{run.candidate_version_id})",
        "",
        "| check | verdict | estimate | 95% interval | n | threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in run.metrics["gate_checks"]:
        interval = "" if c.get("low") is None else f"{c['low']:.2f} – {c['high']:.2f}"
        lines.append(
            f"| {html.escape(c['name'])} | {c['verdict']} | {_f(c.get('estimate'))} | {interval} | "
            f"{c.get('n') or ''} | {_f(c.get('threshold'))} |"
        )
    return "\n".join(lines)


def canary_markdown(canaries: CanaryRepository) -> str:
    """The live canary's tally and rule, else how the latest one ended ("" when there never was one)."""
    recent = canaries.recent(1)
    if not recent:
        return ""
    c: Canary = recent[0]
    if c.live:
        t = canaries.tally(c)
        rate = "—" if t.rate is None else f"{t.rate:.0%}"
        lines = [
            f"**Canary {c.id} live: candidate v{c.candidate_id} against deployed v{c.deployed_id}** "
            f"(since {c.started_at[:16].replace('T', ' ')} UTC)",
            "",
            "| candidate wins | losses | ties | both bad | win rate | anytime 95% interval | voters | "
            "votes left |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {t.wins} | {t.losses} | {t.ties} | {t.both_bad} | {rate} | {t.low:.2f} – {t.high:.2f} | "
            f"{t.voters} | {max(0, c.max_votes - t.decisive)} |",
            "",
            f"Rule: {html.escape(c.rule())}",
        ]
        return "\n".join(lines)
    tally = c.tally
    return (
        f"**Canary {c.id} ended: {html.escape(c.decision or '')}** (candidate v{c.candidate_id} against "
        f"v{c.deployed_id}; {tally.get('wins', 0)} wins, {tally.get('losses', 0)} losses, "
        f"{tally.get('ties', 0)} ties). {html.escape('; '.join(c.reasons))}"
    )


def thumbs_up_by_version(store: FeedbackStore) -> dict[int, float]:
    rows = store.db.execute(
        "SELECT m.model_version_id, f.thumbs FROM feedback f JOIN messages m ON m.id = f.message_id "
        "WHERE f.thumbs IS NOT NULL AND m.model_version_id IS NOT NULL"
    ).fetchall()
    return {r.key: r.rate for r in rates((vid, thumbs > 0) for vid, thumbs in rows)}


def versions_table(registry: VersionRegistry, base_model: str, thumbs: dict[int, float]) -> list[list[Any]]:
    out = []
    for v in reversed(registry.list(base_model)):
        m = v.metrics
        out.append(
            [
                v.id,
                v.name,
                v.status,
                v.method or "base",
                v.parent_id or "",
                _f(m.get("heldout_accuracy")),
                _f(m.get("win_rate")),
                _f(m.get("kl_to_base")),
                _f(thumbs.get(v.id)),
                v.created_at[:19].replace("T", " "),
            ]
        )
    return out


def metrics_figure(registry: VersionRegistry, base_model: str, thumbs: dict[int, float]) -> Figure | None:
    versions = registry.list(base_model)
    if len(versions) < 2 and not thumbs:
        return None
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    axes = fig.subplots(1, 4)
    ids = [v.id for v in versions]
    series = {
        "reward-model accuracy": [v.metrics.get("heldout_accuracy") for v in versions],
        "win rate vs deployed": [v.metrics.get("win_rate") for v in versions],
        "KL to base (nats)": [v.metrics.get("kl_to_base") for v in versions],
        "thumbs-up rate": [thumbs.get(v.id) for v in versions],
    }
    colors = {
        "deployed": "tab:green",
        "rejected": "tab:red",
        "candidate": "tab:orange",
        "retired": "tab:gray",
    }
    for ax, (title, values) in zip(axes, series.items(), strict=True):
        points = [(i, y, v.status) for i, y, v in zip(ids, values, versions, strict=True) if y is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color="lightgray", zorder=1)
            ax.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                c=[colors.get(p[2], "tab:blue") for p in points],
                zorder=2,
            )
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("version", fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize="x-small")
    return fig


class TrainingTab:
    def __init__(
        self,
        store: FeedbackStore,
        base_model: str,
        scheduler: SchedulerControl | None,
        *,
        can_admin: Callable[[Any], bool],
    ):
        self.store = store
        self.base_model = base_model
        self.scheduler = scheduler
        self.runs = store.runs
        self.registry = store.versions
        # Who may deploy / roll back / start training (``Safety.is_admin``): required, so that a tab
        # built without an admin check refuses instead of letting everyone in.
        self.can_admin = can_admin

    # -- views ---------------------------------------------------------------------------------------
    def status_markdown(self) -> str:
        if self.scheduler is None:
            head = "**Scheduler:** not running in this server (start it with `--train-every MINUTES`)."
        else:
            s = self.scheduler.state()
            head = (
                f"**Scheduler:** {s.schedule}; next check {s.next_run or '—'} · a scheduled cycle starts after "
                f"**{s.min_new_feedback}** new feedback events (now **{s.new_feedback}**) · auto-deploy "
                f"**{'on' if s.auto_deploy else 'off (a person approves)'}**"
            )
            if s.policy:
                head += f"\n\n**Policy update:** {html.escape(s.policy)}"
            if s.canary:
                head += f"\n\n**Canary battles:** {html.escape(s.canary)}"
        deployed = self.registry.deployed(self.base_model)
        if deployed:
            label = (
                deployed.name
                if deployed.name.startswith(f"v{deployed.id}")
                else f"v{deployed.id} {deployed.name}"
            )
            head += f"\n\n**Deployed:** {html.escape(label)}"
        running = self.runs.running()
        if running is not None:
            head += (
                f"\n\n**Running:** run {running.id} ({running.trigger}) · stage **{running.stage}** · "
                f"{running.progress * 100:.0f}% · {html.escape(running.message or '')}"
            )
        return head

    def log_tail(self) -> str:
        runs = self.runs.recent(1)
        if not runs or not runs[0].log_path:
            return ""
        path = Path(runs[0].log_path)
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        # Progress bars rewrite one line with carriage returns: keep each line's last state.
        return "\n".join(line.split("\r")[-1] for line in lines[-LOG_TAIL_LINES:])

    def refresh_live(self):
        """The cheap part, polled every few seconds: status, progress, log tail, runs."""
        recent = self.runs.recent(30)
        running = self.runs.running()
        progress = running.progress if running else (recent[0].progress if recent else 0.0)
        return (
            self.status_markdown(),
            gr.update(value=round(progress * 100, 1)),
            self.log_tail(),
            runs_table(recent),
            gate_markdown(recent),
            canary_markdown(self.store.canaries),
        )

    def refresh(self):
        """Everything, the version table and plots included (on open, Refresh and after actions)."""
        thumbs = thumbs_up_by_version(self.store)
        choices = [
            (f"v{v.id} {v.name} ({v.status})", v.id) for v in reversed(self.registry.list(self.base_model))
        ]
        return (
            *self.refresh_live(),
            versions_table(self.registry, self.base_model, thumbs),
            metrics_figure(self.registry, self.base_model, thumbs),
            gr.update(choices=choices),
        )

    # -- actions -------------------------------------------------------------------------------------
    def run_now(self, request: gr.Request):
        if not self.can_admin(request):
            gr.Warning("Only an admin can start training on this server.")
            return self.status_markdown()
        if self.scheduler is None:
            gr.Warning("This server was started without the training scheduler.")
            return self.status_markdown()
        gr.Info(self.scheduler.trigger_now("ui"))
        return self.status_markdown()

    def stop(self, request: gr.Request):
        if not self.can_admin(request):
            gr.Warning("Only an admin can stop training on this server.")
            return self.status_markdown()
        if self.scheduler is not None:
            gr.Info(self.scheduler.stop_running())
        return self.status_markdown()

    def deploy(self, version_id, request: gr.Request):
        return self._change(version_id, request, rollback=False)

    def rollback(self, version_id, request: gr.Request):
        return self._change(version_id, request, rollback=True)

    def _change(self, version_id, request: gr.Request, rollback: bool):
        if not self.can_admin(request):
            gr.Warning("Only an admin can deploy or roll back versions.")
            return self.status_markdown()
        actor = getattr(request, "username", None) or "ui"
        try:
            if rollback:
                target = self.registry.rollback(
                    int(version_id) if version_id else None, base_model=self.base_model
                )
                self.runs.record_event(target.id, "rollback", actor, ["rolled back from the Training tab"])
            else:
                if version_id is None:
                    raise StoreError("Pick a version first.")
                target = self.registry.deploy(int(version_id))
                self.runs.record_event(target.id, "deploy", actor, ["deployed from the Training tab"])
        except StoreError as exc:
            gr.Warning(str(exc))
            return self.status_markdown()
        gr.Info(f"v{target.id} is now deployed; the server switches within seconds.")
        return self.status_markdown()

    # -- layout --------------------------------------------------------------------------------------
    def render(self, tab: gr.Tab | None = None) -> None:
        status = gr.Markdown(self.status_markdown(), elem_id="training-status")
        progress = gr.Slider(
            0,
            100,
            value=0,
            label="Progress of the latest run (%)",
            interactive=False,
            elem_id="training-progress",
        )
        with gr.Row():
            run_now = gr.Button("Run training now", variant="primary", elem_id="training-run-now")
            stop = gr.Button("Stop the running cycle", variant="stop", elem_id="training-stop")
            refresh = gr.Button("Refresh", elem_id="training-refresh")
        log_box = gr.Textbox(
            label="Log of the latest run",
            lines=10,
            max_lines=10,
            interactive=False,
            autoscroll=True,
            elem_id="training-log",
        )
        runs = gr.Dataframe(
            headers=RUN_COLUMNS, label="Training runs", interactive=False, wrap=True, elem_id="training-runs"
        )
        gate = gr.Markdown(elem_id="training-gate")
        canary = gr.Markdown(elem_id="training-canary")
        versions = gr.Dataframe(
            headers=VERSION_COLUMNS, label="Model versions", interactive=False, elem_id="training-versions"
        )
        plot = gr.Plot(label="Metrics across versions", elem_id="training-plot")
        with gr.Row():
            pick = gr.Dropdown(label="Version", choices=[], elem_id="training-version-pick")
            deploy = gr.Button("Deploy this version", elem_id="training-deploy")
            rollback = gr.Button(
                "Roll back (to this version, or the previous one if none picked)", elem_id="training-rollback"
            )
        live = [status, progress, log_box, runs, gate, canary]
        outputs = [*live, versions, plot, pick]
        timer = gr.Timer(3.0, active=True)
        timer.tick(self.refresh_live, None, live, show_progress="hidden")
        refresh.click(self.refresh, None, outputs)
        run_now.click(self.run_now, None, [status]).then(self.refresh, None, outputs)
        stop.click(self.stop, None, [status]).then(self.refresh, None, outputs)
        deploy.click(self.deploy, [pick], [status]).then(self.refresh, None, outputs)
        rollback.click(self.rollback, [pick], [status]).then(self.refresh, None, outputs)
        if tab is not None:
            tab.select(self.refresh, None, outputs)
