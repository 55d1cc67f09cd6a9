"""The flag reference (docs/flags.md) generated from the settings' fields, so that it cannot drift."""

from __future__ import annotations

from pydantic import BaseModel

from settings import ENV_PREFIX, SECTIONS, CommonSettings, short_flags


def _default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    value = info.get_default(call_default_factory=True)
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _row(flag: str, dotted: str, env: str, default: str, help_text: str) -> str:
    names = f"`--{flag}`" + (f" (`--{dotted}`)" if dotted else "")
    return f"| {names} | {default} | `{env}` | {help_text.replace('|', '/')} |"


def flags_markdown() -> str:
    flags = short_flags()
    lines = [
        "# Flags",
        "",
        "Generated from `settings/__init__.py` by `python -m settings > docs/flags.md`; `python launch.py",
        "--help` prints the same. Every flag can also be set with its environment variable (flags win).",
        "Boolean flags have a `--no-` form.",
        "",
        "## Every command",
        "",
        "| flag | default | environment | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in CommonSettings.model_fields.items():
        lines.append(
            _row(
                name.replace("_", "-"),
                "",
                f"{ENV_PREFIX}{name.upper()}",
                _default(CommonSettings, name),
                info.description or "",
            )
        )
    for section, cls in SECTIONS.items():
        lines += [
            "",
            f"## {section}: {(cls.__doc__ or '').strip()}",
            "",
            "| flag | default | environment | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for name, info in cls.model_fields.items():
            dotted = f"{section}.{name.replace('_', '-')}"
            env = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
            lines.append(_row(flags[dotted], dotted, env, _default(cls, name), info.description or ""))
    return "\n".join(lines) + "\n"
