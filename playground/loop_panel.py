"""The Dashboard's "Does feedback improve the model?" section: the latest simulated-user loop
(``python -m simulation``): its plot (gold reward against KL per method, proxy against gold), a
table of its rounds, and a button that runs a loop in the background.

A loop runs in its own low-priority process with its own database under ``DATA_DIR/loop/runs/``: the
users' feedback and the deployed version are never touched. One loop at a time per server.
"""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

ROOT = Path(__file__).resolve().parents[1]
EMPTY = (
    "**No simulated loop yet.** Run one below, or from a shell: "
    "`python -m simulation --oracle vader --rounds 3 --feedback-per-round 200` (about an hour on "
    "2 CPU cores). Simulated users with a known preference give feedback, the real training cycle "
    "runs, and every round is measured against that preference on held-out prompts."
)
LOG_TAIL_LINES = 12
# The loop's --method choices (simulation.cli.METHODS, which this layer may not import; a test compares).
LOOP_METHODS = ("dpo", "kto", "orpo", "simpo", "rl", "best_of_n")


def _f(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def result_markdown(result: dict[str, Any]) -> str:
    """The latest loop as a short text and a table of rounds (escaped: the JSON is a file on disk)."""
    s = result.get("summary") or {}
    head = (
        f"**Latest loop:** oracle **{html.escape(str(result.get('oracle')))}**, method "
        f"**{html.escape(str(result.get('label') or result.get('method')))}**, {len(result.get('rounds', []))} round(s) in "
        f"{_f(s.get('minutes'), '.1f')} min. Gold reward {_f(s.get('gold_base'), '.3f')} (base) → "
        f"{_f(s.get('gold_final'), '.3f')} (deployed), gold win rate against the base "
        f"**{_f(s.get('win_rate_final'), '.0%')}**, KL to the base {_f(s.get('kl_final'), '.2f')} nats, "
        f"capability {_f(s.get('capability_base'), '.1f')}% → {_f(s.get('capability_final'), '.1f')}%."
    )
    rows = [
        "| round | decision | gold | win vs base | KL | proxy gain | capability | minutes |",
        "|---" * 8 + "|",
    ]
    base = result.get("base") or {}
    rows.append(
        f"| 0 | base | {_f(base.get('gold'), '.3f')} | 50% | 0.00 | — | {_f(100 * base.get('capability', 0), '.1f')}% | |"
    )
    for r in result.get("rounds", []):
        m = r.get("candidate") or {}
        rows.append(
            f"| {r.get('round')} | {html.escape(str(r.get('decision') or r.get('status')))} | {_f(m.get('gold'), '.3f')} | "
            f"{_f(m.get('win_rate'), '.0%')} | {_f(m.get('kl'), '.2f')} | {_f(m.get('proxy_gain'), '+.2f')} | "
            f"{_f(100 * m['capability'] if 'capability' in m else None, '.1f')}% | {_f(r.get('elapsed_minutes'), '.1f')} |"
        )
    return head + "\n\n" + "\n".join(rows)


class LoopPanel:
    def __init__(self, data_dir: Path, *, threads: int = 1, can_admin: Callable[[Any], bool]):
        self.loop_dir = Path(data_dir) / "loop"
        self.data_dir = Path(data_dir)
        self.threads = threads
        self.can_admin = can_admin  # required: a panel built without an admin check refuses, never allows
        self._proc: subprocess.Popen | None = None

    # -- views ---------------------------------------------------------------------------------------
    def summary(self) -> str:
        path = self.loop_dir / "latest.json"
        try:
            return result_markdown(json.loads(path.read_text()))
        except FileNotFoundError:
            return EMPTY
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"The latest loop result ({path}) cannot be read: {html.escape(str(exc))}"

    def plot(self) -> str | None:
        path = self.loop_dir / "latest.png"
        return str(path) if path.is_file() else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def status(self) -> str:
        if self._proc is None:
            return ""
        log_path = self.loop_dir / "ui-run.log"
        try:
            lines = [ln.split("\r")[-1] for ln in log_path.read_text(errors="replace").splitlines()]
        except OSError:
            lines = []
        state = "running" if self.running else f"finished (exit code {self._proc.returncode})"
        return f"Simulated loop {state}. Log ({log_path}):\n" + "\n".join(lines[-LOG_TAIL_LINES:])

    def refresh(self):
        return self.summary(), self.plot(), self.status()

    # -- actions -------------------------------------------------------------------------------------
    def command(self, oracle: str, method: str, rounds: int, events: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "simulation",
            "--oracle",
            oracle,
            "--method",
            method,
            "--rounds",
            str(int(rounds)),
            "--feedback-per-round",
            str(int(events)),
            "--threads",
            str(self.threads),
            "--data-dir",
            str(self.data_dir),
        ]

    def start(self, oracle: str, method: str, rounds, events, request: gr.Request | None = None) -> str:
        if not self.can_admin(request):
            gr.Warning("Only an admin can start a simulated loop on this server.")
            return self.status()
        if self.running:
            gr.Warning("A simulated loop is already running; wait for it or stop it.")
            return self.status()
        try:
            cmd = self.command(oracle, method, int(rounds), int(events))
            if not 1 <= int(rounds) <= 10 or not 20 <= int(events) <= 2000:
                raise ValueError("rounds must be 1-10 and feedback events per round 20-2000")
        except (TypeError, ValueError) as exc:
            gr.Warning(str(exc))
            return self.status()
        self.loop_dir.mkdir(parents=True, exist_ok=True)
        with (self.loop_dir / "ui-run.log").open("wb") as log_file:
            self._proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"},
                start_new_session=True,  # its own process group: Stop reaches the training child too
                preexec_fn=lambda: os.nice(10),  # noqa: PLW1509 (only os.nice)
            )
        gr.Info("Simulated loop started; its results appear here when it finishes.")
        return self.status()

    def stop(self, request: gr.Request | None = None) -> str:
        if not self.can_admin(request):
            gr.Warning("Only an admin can stop the simulated loop.")
        elif self.running:
            os.killpg(self._proc.pid, signal.SIGTERM)  # the group this panel started, nothing else
            self._proc.wait(timeout=60)
        return self.status()

    def render(self, tab: gr.Tab | None = None) -> None:
        with gr.Accordion("Does feedback improve the model? (simulated users)", open=True):
            summary = gr.Markdown(self.summary(), elem_id="loop-summary")
            image = gr.Image(
                value=self.plot(),
                type="filepath",
                label="Gold reward against KL; proxy against gold",
                interactive=False,
                elem_id="loop-plot",
            )
            with gr.Row():
                oracle = gr.Dropdown(["vader", "concise"], value="vader", label="Gold preference", scale=1)
                method = gr.Dropdown(list(LOOP_METHODS), value="dpo", label="Method", scale=1)
                rounds = gr.Number(3, precision=0, label="Rounds", scale=1)
                events = gr.Number(200, precision=0, label="Feedback events per round", scale=1)
            with gr.Row():
                start = gr.Button("Run a simulated loop", elem_id="loop-run")
                stop = gr.Button("Stop it", variant="stop", elem_id="loop-stop")
                refresh = gr.Button("Refresh", elem_id="loop-refresh")
            status = gr.Textbox(label="Simulated loop", lines=6, interactive=False, elem_id="loop-status")
        outputs = [summary, image, status]
        start.click(self.start, [oracle, method, rounds, events], [status])
        stop.click(self.stop, None, [status]).then(self.refresh, None, outputs)
        refresh.click(self.refresh, None, outputs)
        if tab is not None:
            tab.select(self.refresh, None, outputs)
