"""Prompt-engineering presets: data files (``schema``), one module per technique (``techniques``),
and the runner that executes a preset against the model service (``runner``).

    presets = load_presets(BUILTIN_DIR, user_dir)
    run = run_preset(presets["self-consistency"], messages, params, service)
    for event in run:            # Event(kind="answer" | "partial" | "thought" | "vote" | ...)
        ...
    run.answer, run.result, run.trace, run.model_calls
"""

from playground.presets.events import Event
from playground.presets.runner import PresetRun, RunCancelled, run_preset
from playground.presets.schema import (
    BUILTIN_DIR,
    Example,
    Preset,
    PresetError,
    format_examples,
    load_preset_file,
    load_presets,
    parse_examples,
)

__all__ = [
    "BUILTIN_DIR",
    "Event",
    "Example",
    "Preset",
    "PresetError",
    "PresetRun",
    "RunCancelled",
    "format_examples",
    "load_preset_file",
    "load_presets",
    "parse_examples",
    "run_preset",
]
