"""Preset files: what a preset is, how a TOML file becomes one, and the errors that name the field.

A preset is a TOML file a user can copy and edit::

    name = "Few-shot"
    technique = "few_shot"          # see playground/presets/techniques
    description = "Answers in the style of the examples."
    system_prompt = "Answer briefly."   # optional: the default when the chat has none
    template = "{question}"             # optional: how the user's message is wrapped
    [params]                            # optional sampling parameters
    temperature = 0.2
    [options]                           # optional technique options (e.g. samples = 5)
    [[examples]]                        # worked examples (question, answer, optional reasoning)
    question = "..."
    answer = "..."

Built-in presets ship in ``playground/presets/builtin``; user presets live in a directory (default
``DATA_DIR/presets``) and replace a built-in preset with the same ``id`` (default: the file name).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.base import SamplingParams
from playground.presets.techniques import TECHNIQUES, Technique
from playground.presets.techniques.common import placeholders

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_PRESET_BYTES = 200_000


class PresetError(ValueError):
    """A preset file (or edited examples) is invalid; the message names the file and the field."""


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    reasoning: str = ""


class PresetParams(BaseModel):
    """Sampling parameters a preset sets; anything left out keeps the caller's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=100_000)
    max_new_tokens: int | None = Field(None, ge=1, le=32_768)
    repetition_penalty: float | None = Field(None, ge=0.5, le=2)
    seed: int | None = Field(None, ge=0, lt=2**32)
    stop: list[str] | None = Field(None, max_length=8)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PresetFile(BaseModel):
    """The shape of a preset file, before technique-specific checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = None
    name: str = Field(min_length=1, max_length=80)
    technique: str
    description: str = ""
    order: int = 100
    system_prompt: str | None = None
    template: str | None = None
    params: PresetParams = PresetParams()
    options: dict[str, Any] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list, max_length=32)


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    technique: str
    template: str
    options: BaseModel
    description: str = ""
    system_prompt: str | None = None
    params: PresetParams = field(default_factory=PresetParams)
    examples: tuple[Example, ...] = ()
    order: int = 100
    source: str = ""  # the file it came from ("" when built in code)
    builtin: bool = False

    @property
    def spec(self) -> Technique:
        return TECHNIQUES[self.technique]

    @property
    def uses_examples(self) -> bool:
        return self.spec.examples != "none"

    def sampling(self, base: SamplingParams | None = None) -> SamplingParams:
        """``base`` (default: the standard parameters) with this preset's parameters on top."""
        try:
            return replace(base or SamplingParams(), **self.params.overrides())
        except ValueError as exc:
            raise PresetError(f"{self.source or self.id}: params: {exc}") from exc

    def with_examples(self, examples: Sequence[Example]) -> Preset:
        """This preset with other examples (e.g. edited in the UI), checked like the file's."""
        updated = replace(self, examples=tuple(examples))
        _check_examples(updated.spec, updated.examples, updated.source or "edited examples")
        return updated


# -- errors ------------------------------------------------------------------------------------------
def _loc(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"#{part + 1}"
        else:
            out += ("." if out else "") + str(part)
    return out or "(file)"


def _known_fields(loc: Sequence[Any], technique: Technique | None) -> list[str]:
    names = [p for p in loc if isinstance(p, str)]
    if names[:1] == ["params"]:
        return list(PresetParams.model_fields)
    if names[:1] == ["examples"]:
        return list(Example.model_fields)
    if names[:1] == ["options"] and technique is not None:
        return list(technique.options.model_fields) or ["(none: this technique has no options)"]
    return [f for f in PresetFile.model_fields]


def _describe(exc: ValidationError, source: str, prefix: Sequence[Any] = (), technique=None) -> PresetError:
    problems = []
    for err in exc.errors():
        loc = [*prefix, *err["loc"]]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; known fields here: {', '.join(_known_fields(loc[:-1] or loc, technique))}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{_loc(loc)}: {msg}")
    return PresetError(f"{source}: " + "; ".join(problems))


def _check_examples(spec: Technique, examples: Sequence[Example], source: str) -> None:
    if spec.examples == "required" and not examples:
        raise PresetError(f"{source}: examples: the {spec.key} technique needs at least one example")
    if spec.examples == "none" and examples:
        raise PresetError(f"{source}: examples: the {spec.key} technique does not use examples; remove them")
    if spec.needs_reasoning:
        for i, example in enumerate(examples, 1):
            if not example.reasoning.strip():
                raise PresetError(
                    f"{source}: examples#{i}.reasoning: {spec.key} examples need a worked reasoning"
                )


# -- loading -----------------------------------------------------------------------------------------
def parse_preset(data: dict[str, Any], source: str, *, default_id: str = "", builtin: bool = False) -> Preset:
    """Validate a preset's data (as read from TOML) and resolve its technique-specific parts."""
    try:
        raw = PresetFile.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc, source) from None
    spec = TECHNIQUES.get(raw.technique)
    if spec is None:
        raise PresetError(
            f"{source}: technique: unknown technique {raw.technique!r}; known: {', '.join(TECHNIQUES)}"
        )
    preset_id = raw.id if raw.id is not None else re.sub(r"[^a-z0-9_-]", "-", default_id.lower()).strip("-")
    if not ID_PATTERN.match(preset_id or ""):
        raise PresetError(f"{source}: id: {preset_id!r} must be 1-64 lower-case letters, digits, '-' or '_'")
    try:
        options = spec.options.model_validate(raw.options)
    except ValidationError as exc:
        raise _describe(exc, source, ("options",), spec) from None
    template = raw.template if raw.template is not None else spec.default_template
    used = set(placeholders(template))
    missing = sorted(spec.required - used)
    unknown = sorted(used - spec.allowed)
    if missing:
        raise PresetError(f"{source}: template: must contain " + ", ".join("{" + m + "}" for m in missing))
    if unknown:
        raise PresetError(
            f"{source}: template: unknown placeholder(s) "
            + ", ".join("{" + u + "}" for u in unknown)
            + f"; {spec.key} templates know "
            + ", ".join("{" + a + "}" for a in sorted(spec.allowed))
        )
    if spec.check_template is not None:
        try:
            spec.check_template(template)
        except ValueError as exc:
            raise PresetError(f"{source}: template: {exc}") from None
    _check_examples(spec, raw.examples, source)
    preset = Preset(
        id=preset_id,
        name=raw.name,
        technique=raw.technique,
        template=template,
        options=options,
        description=raw.description.strip(),
        system_prompt=raw.system_prompt,
        params=raw.params,
        examples=tuple(raw.examples),
        order=raw.order,
        source=source,
        builtin=builtin,
    )
    preset.sampling()  # parameters that are valid alone but not together fail here, naming the file
    return preset


def load_preset_file(path: str | Path, *, builtin: bool = False) -> Preset:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PresetError(f"{path}: cannot read the file: {exc}") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise PresetError(f"{path}: the file is larger than {MAX_PRESET_BYTES // 1000} kB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PresetError(f"{path}: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML: {exc}") from None
    return parse_preset(data, str(path), default_id=path.stem, builtin=builtin)


def load_presets(
    builtin_dir: str | Path | None = BUILTIN_DIR,
    user_dir: str | Path | None = None,
    *,
    on_error: Callable[[PresetError], None] | None = None,
) -> dict[str, Preset]:
    """All presets by id, built-ins first, then the user's (a user preset replaces a built-in one
    with the same id). A bad file raises PresetError, or, with ``on_error``, is reported and skipped."""
    found: dict[str, Preset] = {}
    for directory, builtin in ((builtin_dir, True), (user_dir, False)):
        if directory is None or not Path(directory).is_dir():
            continue
        seen_here: dict[str, str] = {}
        for path in sorted(Path(directory).glob("*.toml")):
            try:
                preset = load_preset_file(path, builtin=builtin)
                if preset.id in seen_here:
                    raise PresetError(f"{path}: id: {preset.id!r} is already used by {seen_here[preset.id]}")
            except PresetError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            seen_here[preset.id] = str(path)
            found[preset.id] = preset
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, not kv[1].builtin, kv[1].name.lower())))


# -- examples as editable text -----------------------------------------------------------------------
_LABEL = re.compile(r"^(Q|R|A)\s*:\s?(.*)$")
_FIELDS = {"Q": "question", "R": "reasoning", "A": "answer"}


def format_examples(examples: Sequence[Example]) -> str:
    """Examples as the editable text of the Chat tab: ``Q:``, optional ``R:`` (reasoning), ``A:``."""
    blocks = []
    for e in examples:
        lines = [f"Q: {e.question}"]
        if e.reasoning:
            lines.append(f"R: {e.reasoning}")
        lines.append(f"A: {e.answer}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def parse_examples(text: str) -> list[Example]:
    """Parse the examples text; a value may continue on the following lines. Raises PresetError."""
    examples: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    last_key = None
    for number, line in enumerate((text or "").splitlines(), 1):
        match = _LABEL.match(line.strip())
        if match:
            label, value = match.groups()
            key = _FIELDS[label]
            if key == "question":
                current = {"question": value}
                examples.append(current)
            elif current is None:
                raise PresetError(f"examples, line {number}: start each example with 'Q:'")
            elif key in current:
                raise PresetError(
                    f"examples, line {number}: example {len(examples)} has two '{label}:' lines"
                )
            else:
                current[key] = value
            last_key = key
        elif line.strip():
            if current is None or last_key is None:
                raise PresetError(f"examples, line {number}: start each example with 'Q:'")
            current[last_key] = f"{current[last_key]}\n{line}".strip("\n")
    out = []
    for i, ex in enumerate(examples, 1):
        if not ex.get("question", "").strip():
            raise PresetError(f"examples: example {i} has an empty 'Q:'")
        if not ex.get("answer", "").strip():
            raise PresetError(f"examples: example {i} has no 'A:' (answer) line")
        out.append(Example(**{k: v.strip() for k, v in ex.items()}))
    if len(out) > 32:
        raise PresetError("examples: at most 32 examples")
    return out
