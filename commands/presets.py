"""``python launch.py presets``: list the presets the server would offer, or check preset files.

python launch.py presets                       # built-in + your presets (DATA_DIR/presets)
python launch.py presets check my_preset.toml  # validate files; exit code 1 names what is wrong
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import CliPositionalArg, CliSubCommand, SettingsConfigDict

from playground.presets.schema import BUILTIN_DIR, PresetError, load_preset_file, load_presets
from settings import CommonSettings


class CheckPresets(BaseModel):
    """Validate preset files (exit code 1 names the wrong field)."""

    files: CliPositionalArg[list[Path]] = Field(description="preset TOML files")

    def run(self) -> int:
        failed = 0
        for name in self.files:
            try:
                preset = load_preset_file(name)
            except PresetError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
            else:
                print(f"ok: {name}: {preset.id} ({preset.technique})")
        return 1 if failed else 0


class PresetsCommand(CommonSettings):
    """List the presets the server would offer (built-in and yours), or check preset files."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py presets")

    presets_dir: Path | None = Field(None, description="your presets folder (unset: DATA_DIR/presets)")
    check: CliSubCommand[CheckPresets]

    def run(self) -> int:
        if self.check is not None:
            return self.check.run()
        errors: list[str] = []
        folder = self.presets_dir or self.data_dir / "presets"
        presets = load_presets(BUILTIN_DIR, folder, on_error=lambda e: errors.append(str(e)))
        for preset in presets.values():
            origin = "built-in" if preset.builtin else preset.source
            print(f"{preset.id:<22} {preset.technique:<20} {preset.name}  [{origin}]")
        for error in errors:
            print(f"skipped: {error}", file=sys.stderr)
        return 1 if errors else 0
