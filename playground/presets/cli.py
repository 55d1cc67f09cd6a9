"""``python launch.py presets``: list the presets the server would offer, or check preset files.

python launch.py presets                       # built-in + your presets (DATA_DIR/presets)
python launch.py presets check my_preset.toml  # validate files; exit code 1 names what is wrong
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from playground.presets.schema import BUILTIN_DIR, PresetError, load_preset_file, load_presets


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="launch.py presets", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data directory (default ./data or PLAYGROUND_DATA_DIR)")
    parser.add_argument("--presets-dir", help="your presets folder (default DATA_DIR/presets)")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="validate preset files")
    check.add_argument("files", nargs="+")
    args = parser.parse_args(list(argv))

    if args.command == "check":
        failed = 0
        for name in args.files:
            try:
                preset = load_preset_file(name)
            except PresetError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
            else:
                print(f"ok: {name}: {preset.id} ({preset.technique})")
        return 1 if failed else 0

    from playground.settings import Settings

    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("presets_dir", args.presets_dir)) if v}
    settings = Settings(**overrides)
    errors: list[str] = []
    presets = load_presets(BUILTIN_DIR, settings.presets_path, on_error=lambda e: errors.append(str(e)))
    for preset in presets.values():
        origin = "built-in" if preset.builtin else preset.source
        print(f"{preset.id:<22} {preset.technique:<20} {preset.name}  [{origin}]")
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    return 1 if errors else 0
