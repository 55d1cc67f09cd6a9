"""The presets and tools one server uses: built-in and user presets (reloadable while serving), and
the ReAct tool box with the knowledge base indexed from the bundled notes and the user's files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from models.base import ChatMessage, SamplingParams
from models.service import ModelService
from playground.presets.runner import PresetRun
from playground.presets.schema import BUILTIN_DIR, Example, Preset, PresetError, load_presets
from playground.tools import Tool, default_tools
from playground.tools.knowledge import BUNDLED_DIR, KnowledgeBase

log = logging.getLogger(__name__)

DEFAULT_PRESET = "plain"
USER_DIR_README = """Your own presets: TOML files in this folder appear in the Chat tab's preset picker.

Start from a copy of a built-in preset (playground/presets/builtin/*.toml), change `id` and `name`,
and edit it. A preset with the same id as a built-in one replaces it. Press "Reload presets" in the
Chat tab (or restart) after editing; an invalid file is reported with the field that is wrong.
Check files from the command line with: python launch.py presets check FILE...
"""


class PresetLibrary:
    def __init__(
        self,
        user_dir: str | Path | None = None,
        *,
        builtin_dir: str | Path | None = BUILTIN_DIR,
        knowledge: KnowledgeBase | None = None,
        knowledge_user_dir: str | Path | None = None,
    ):
        self.builtin_dir = builtin_dir
        self.user_dir = Path(user_dir) if user_dir is not None else None
        self.knowledge = knowledge
        self.knowledge_user_dir = Path(knowledge_user_dir) if knowledge_user_dir is not None else None
        self.tools: dict[str, Tool] = default_tools(knowledge)
        self.presets: dict[str, Preset] = {}
        self.errors: list[str] = []
        self.reload()

    @classmethod
    def from_settings(cls, settings) -> PresetLibrary:
        """Create the user folders (with a README) and index the knowledge base."""
        user_dir = settings.presets_path
        kb_dir = settings.knowledge_path
        for folder in (user_dir, kb_dir):
            folder.mkdir(parents=True, exist_ok=True)
        readme = user_dir / "README.txt"
        if not readme.exists():
            readme.write_text(USER_DIR_README, encoding="utf-8")
        knowledge = KnowledgeBase(settings.knowledge_db_path, [BUNDLED_DIR, kb_dir])
        report = knowledge.refresh()
        for error in report.errors:
            log.warning("knowledge base: %s", error)
        library = cls(user_dir, knowledge=knowledge, knowledge_user_dir=kb_dir)
        for error in library.errors:
            log.warning("preset skipped: %s", error)
        return library

    def reload(self) -> list[str]:
        """Re-read the preset files; bad files are skipped and returned as messages."""
        errors: list[str] = []
        self.presets = load_presets(self.builtin_dir, self.user_dir, on_error=lambda e: errors.append(str(e)))
        self.errors = errors
        return errors

    @property
    def default_id(self) -> str:
        return DEFAULT_PRESET if DEFAULT_PRESET in self.presets else next(iter(self.presets))

    def get(self, preset_id: str | None) -> Preset:
        preset = self.presets.get(preset_id or self.default_id)
        if preset is None:
            raise PresetError(f"There is no preset {preset_id!r} (any more); pick another one.")
        return preset

    def choices(self) -> list[tuple[str, str]]:
        return [(p.name + ("" if p.builtin else " (yours)"), p.id) for p in self.presets.values()]

    def run(
        self,
        preset: Preset | str,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        service: ModelService,
        *,
        examples: Sequence[Example] | None = None,
        version_id: int | None = None,
    ) -> PresetRun:
        preset = self.get(preset) if isinstance(preset, str) else preset
        return PresetRun(
            preset, messages, params, service, tools=self.tools, examples=examples, version_id=version_id
        )
