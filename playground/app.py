"""Assembles the Gradio Blocks app from its tabs. Each tab is its own module and gets the shared
services explicitly; nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from feedback_store.store import FeedbackStore
from models.service import ModelService
from playground.chat import ChatTab
from playground.compare import CompareTab
from playground.dashboard import DashboardTab
from playground.feedback_ui import register_api as register_feedback_api
from playground.history import browser_key_state
from playground.history import register_api as register_history_api
from playground.lab import LabTab
from playground.loop_panel import LoopPanel
from playground.presets.library import PresetLibrary
from playground.rank import RankTab
from playground.safety import Safety
from playground.training import SchedulerControl, TrainingTab
from settings import Settings

TITLE = "RLHF Playground"

CSS = """
#reply-stats { font-size: 0.85em; opacity: 0.8; }
#history-list { max-height: 420px; overflow-y: auto; }
#history-list .wrap { flex-direction: column; align-items: stretch; }
#history-list label { font-size: 0.85em; }
#history-count { font-size: 0.8em; opacity: 0.8; }
"""


@dataclass
class AppContext:
    settings: Settings
    store: FeedbackStore
    service: ModelService
    safety: Safety  # rate limits, moderation, admins: one set for the UI and the API
    scheduler: SchedulerControl | None = None  # the training scheduler, when this server runs one


def build_app(ctx: AppContext) -> gr.Blocks:
    presets = PresetLibrary.from_settings(ctx.settings)
    safety = ctx.safety
    # Files handed to browsers (exports, "my data") are copied into Gradio's cache: cleared hourly, so
    # that a user's download does not outlive their deletion by long.
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\nChat with a 4-bit model; your feedback trains the next version.")
        browser_key = browser_key_state()  # whose data an anonymous user's turns are, in every tab
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                ChatTab(ctx.settings, ctx.store, ctx.service, presets, safety=safety).render(browser_key)
            with gr.Tab("Compare", id="compare"):
                CompareTab(ctx.settings, ctx.store, ctx.service, presets=presets, safety=safety).render(
                    browser_key
                )
            with gr.Tab("Rank", id="rank"):
                RankTab(ctx.settings, ctx.store, ctx.service, safety=safety).render(browser_key)
            with gr.Tab("Prompt lab", id="lab"):
                LabTab(
                    presets, ctx.service, concurrency=ctx.settings.inference.concurrency, safety=safety
                ).render()
            with gr.Tab("Dashboard", id="dashboard") as dashboard_tab:
                DashboardTab(ctx.store, safety=safety).render(dashboard_tab)
                LoopPanel(
                    ctx.settings.data_dir, threads=ctx.settings.training.threads, can_admin=safety.is_admin
                ).render(dashboard_tab)
            with gr.Tab("Training", id="training") as training_tab:
                TrainingTab(
                    ctx.store, ctx.service.base_model, ctx.scheduler, can_admin=safety.is_admin
                ).render(training_tab)
        register_feedback_api(ctx.store, safety)
        register_history_api(ctx.store, safety, runs_dir=ctx.settings.data_dir / "runs")
    # The generating events share one concurrency slot (playground.controls); everything else
    # (storing a message, feedback) may run many at once.
    demo.queue(default_concurrency_limit=16, max_size=256)
    return demo
