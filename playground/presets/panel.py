"""The Chat tab's preset controls: the preset picker, its description, the editable few-shot examples,
"Reload presets", and the knowledge-base upload for the ReAct search tool.

Choosing a preset loads its system prompt and sampling parameters into the Chat tab's controls and
its examples into the examples box; the next reply uses whatever those controls then say.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from models.base import ChatMessage, SamplingParams
from models.service import ModelService
from playground.access import AccessPolicy
from playground.presets.library import PresetLibrary
from playground.presets.runner import PresetRun
from playground.presets.schema import Preset, PresetError, format_examples, parse_examples
from playground.tools import ToolError

log = logging.getLogger(__name__)

EXAMPLES_HELP = (
    "Examples for the next reply: `Q:` question, `R:` reasoning (chain-of-thought presets), `A:` answer; "
    "a blank line between examples."
)


def describe(preset: Preset) -> str:
    lines = [f"**{html.escape(preset.spec.label)}** · {html.escape(preset.description)}"]
    settings = [f"{k} {v}" for k, v in preset.params.overrides().items()]
    options = preset.options.model_dump()
    for key in ("samples", "max_steps", "tools"):
        if key in options:
            value = options[key]
            settings.append(f"{key} {', '.join(value) if isinstance(value, list) else value}")
    if settings:
        lines.append("Sets: " + html.escape("; ".join(settings)))
    origin = "built-in" if preset.builtin else f"your file `{Path(preset.source).name}`"
    lines.append(f"<small>id `{preset.id}` · {origin}</small>")
    return "\n\n".join(lines)


def control_values(preset: Preset, default_system_prompt: str) -> list[Any]:
    """System prompt, then the seven sampling controls, as the preset sets them."""
    p = preset.sampling(SamplingParams())
    return [
        preset.system_prompt if preset.system_prompt is not None else default_system_prompt,
        p.temperature,
        p.top_p,
        p.top_k,
        p.max_new_tokens,
        p.repetition_penalty,
        -1 if p.seed is None else p.seed,
        "\n".join(p.stop),
    ]


class PresetPanel:
    def __init__(self, library: PresetLibrary, default_system_prompt: str, *, access: AccessPolicy):
        self.library = library
        self.default_system_prompt = default_system_prompt
        self.access = access  # the knowledge base is shared: only admins add to it

    # -- logic (no Gradio components needed) ---------------------------------------------------------
    def start(
        self,
        preset_id: str | None,
        examples_text: str | None,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        service: ModelService,
    ) -> PresetRun:
        """Start the chosen preset, with the examples box's text when it differs from the preset's."""
        preset = self.library.get(preset_id)
        examples = None
        edited = (
            examples_text is not None and examples_text.strip() != format_examples(preset.examples).strip()
        )
        if preset.uses_examples and edited:
            examples = parse_examples(examples_text)
        return self.library.run(preset, messages, params, service, examples=examples)

    @staticmethod
    def reply_info(run: PresetRun) -> dict[str, Any]:
        return {
            "preset_id": run.preset.id,
            "preset_name": run.preset.name,
            "technique": run.preset.technique,
            "trace": [],
            "streaming": True,
        }

    def select(self, preset_id: str):
        try:
            preset = self.library.get(preset_id)
        except PresetError as exc:
            gr.Warning(str(exc))
            return [gr.update()] * 10
        return [
            describe(preset),
            gr.update(value=format_examples(preset.examples), visible=preset.uses_examples),
            *control_values(preset, self.default_system_prompt),
        ]

    def reload(self, preset_id: str):
        errors = self.library.reload()
        for error in errors:
            gr.Warning(f"Preset skipped: {error}")
        keep = preset_id if preset_id in self.library.presets else self.library.default_id
        preset = self.library.get(keep)
        gr.Info(f"{len(self.library.presets)} presets loaded.")
        return (
            gr.update(choices=self.library.choices(), value=keep),
            describe(preset),
            gr.update(value=format_examples(preset.examples), visible=preset.uses_examples),
        )

    def knowledge_status(self) -> str:
        kb = self.library.knowledge
        if kb is None:
            return "No knowledge base is configured."
        where = (
            f" Your notes folder: `{self.library.knowledge_user_dir}`."
            if self.library.knowledge_user_dir
            else ""
        )
        return f"{kb.count()} notes indexed for `search[...]`.{where}"

    def add_notes(self, files, request: gr.Request = None):
        if why := self.access.admin_refusal(request, "Adding to the shared knowledge base"):
            gr.Warning(why)
            return self.knowledge_status(), None
        kb, user_dir = self.library.knowledge, self.library.knowledge_user_dir
        if kb is None or user_dir is None:
            gr.Warning("No knowledge base is configured.")
            return self.knowledge_status(), None
        for f in files or []:
            path = Path(getattr(f, "name", f))
            try:
                dest = kb.add_file(path, user_dir)
            except (ToolError, OSError) as exc:
                gr.Warning(str(exc))
            else:
                gr.Info(f"Added {dest.name} to the knowledge base.")
        return self.knowledge_status(), None

    # -- layout --------------------------------------------------------------------------------------
    def render(self) -> None:
        preset = self.library.get(self.library.default_id)
        with gr.Accordion("Prompt technique", open=True, elem_id="preset-panel"):
            self.picker = gr.Dropdown(
                choices=self.library.choices(),
                value=preset.id,
                label="Preset (applies to the next reply)",
                elem_id="preset-picker",
                interactive=True,
            )
            self.description = gr.Markdown(describe(preset), elem_id="preset-description")
            self.examples = gr.Textbox(
                value=format_examples(preset.examples),
                lines=8,
                max_lines=20,
                label="Examples",
                info=EXAMPLES_HELP,
                visible=preset.uses_examples,
                elem_id="preset-examples",
            )
            self.reload_button = gr.Button("Reload presets", size="sm", elem_id="reload-presets")
        with gr.Accordion("Knowledge base (ReAct search tool)", open=False, elem_id="kb-panel"):
            self.kb_status = gr.Markdown(self.knowledge_status(), elem_id="kb-status")
            self.kb_upload = gr.File(
                label="Add .md / .txt notes",
                file_types=[".md", ".txt"],
                file_count="multiple",
                elem_id="kb-upload",
            )

    @property
    def components(self) -> list[gr.components.Component]:
        """Inputs the reply handler needs: the chosen preset and the examples text."""
        return [self.picker, self.examples]

    def wire(self, system_prompt: gr.Textbox, sampling: list[gr.components.Component]) -> None:
        self.picker.input(
            self.select, [self.picker], [self.description, self.examples, system_prompt, *sampling]
        )
        self.reload_button.click(self.reload, [self.picker], [self.picker, self.description, self.examples])
        self.kb_upload.upload(self.add_notes, [self.kb_upload], [self.kb_status, self.kb_upload])
