"""The Gradio pieces every generating tab shares: the sampling controls (widgets and their values as
``SamplingParams``), the concurrency slot that every event which runs the model takes, and
``in_field_order`` for a dataclass of components.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from models.base import SamplingParams

# The events that generate (Chat, Compare, Rank, Prompt lab) share one concurrency id, so together
# they run at most ``--concurrency`` at once: one slot per model instance. Everything else (storing a
# message, feedback) may run many at once.
GENERATE_CONCURRENCY_ID = "generate"


def generate_queue(concurrency: int) -> dict[str, Any]:
    """The keyword arguments that put an event listener in the shared generate slot."""
    return {"concurrency_limit": concurrency, "concurrency_id": GENERATE_CONCURRENCY_ID}


def in_field_order(group: Any) -> list[gr.components.Component]:
    """The components of a dataclass of Gradio components, in the order its fields are declared (the
    order of the values a handler they feed receives, or of the updates it returns)."""
    return [getattr(group, f.name) for f in fields(group)]


@dataclass
class SamplingControls:
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    max_new_tokens: gr.Slider
    repetition_penalty: gr.Slider
    seed: gr.Number
    stop: gr.Textbox

    @classmethod
    def render(cls, defaults: SamplingParams | None = None) -> SamplingControls:
        d = defaults or SamplingParams()
        return cls(
            temperature=gr.Slider(0.0, 2.0, value=d.temperature, step=0.05, label="Temperature (0 = greedy)"),
            top_p=gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="Top-p"),
            top_k=gr.Slider(0, 200, value=d.top_k, step=1, label="Top-k (0 = off)"),
            max_new_tokens=gr.Slider(16, 2048, value=d.max_new_tokens, step=16, label="Max new tokens"),
            repetition_penalty=gr.Slider(
                1.0, 2.0, value=d.repetition_penalty, step=0.05, label="Repetition penalty"
            ),
            seed=gr.Number(value=-1, precision=0, label="Seed (-1 = random)"),
            stop=gr.Textbox(value="", lines=2, label="Stop strings (one per line)"),
        )

    @property
    def components(self) -> list[gr.components.Component]:
        """The controls in the order ``to_params`` takes their values."""
        return in_field_order(self)

    @staticmethod
    def to_params(
        temperature: Any,
        top_p: Any,
        top_k: Any,
        max_new_tokens: Any,
        repetition_penalty: Any,
        seed: Any,
        stop: Any,
    ) -> SamplingParams:
        """Build validated parameters from the controls' values (raises ValueError with the reason)."""
        seed_value = None if seed is None or int(seed) < 0 else int(seed)
        stops = tuple(s for s in (stop or "").splitlines() if s.strip())
        return SamplingParams(
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            max_new_tokens=int(max_new_tokens),
            repetition_penalty=float(repetition_penalty),
            seed=seed_value,
            stop=stops,
        )
