"""The subcommands of ``launch.py``, each a settings class whose fields make its command line (flag,
help, default and environment variable written once, in ``settings`` or in the command's class).

    python launch.py train ...      (commands.train)       python launch.py versions | deploy | rollback
    python launch.py export | import (commands.data)        python launch.py presets [check FILE ...]

Each command class inherits ``settings.CommonSettings`` (``--model``, ``--data-dir``, ``--db``) or the
whole ``settings.Settings``, so every command finds the database, the data directory and the model the
same way the server does. This package is the top layer with ``launch.py``: it may import every
package; nothing imports it but ``launch.py``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from settings import flag_for

COMMANDS: dict[str, str] = {
    "train": "commands.train:TrainCommand",
    "export": "commands.data:ExportCommand",
    "import": "commands.data:ImportCommand",
    "versions": "commands.versions:VersionsCommand",
    "deploy": "commands.versions:DeployCommand",
    "rollback": "commands.versions:RollbackCommand",
    "presets": "commands.presets:PresetsCommand",
    "quantize": "commands.quantize:QuantizeCommand",
}
"""Subcommand name -> "module:class", imported only when used (``launch.py`` stays quick to start)."""

T = TypeVar("T", bound=BaseSettings)


class Command(Protocol):
    def run(self) -> int:
        """Do the command; returns the process exit code."""
        ...


def parse(cls: type[T], argv: Sequence[str]) -> T:
    """Flags over environment variables over defaults. ``--help`` prints the generated help and exits 0;
    a bad flag or value exits 2 with a message naming the flag, never a traceback."""
    prog = cls.model_config.get("cli_prog_name") or "launch.py"
    try:
        return cls(_cli_parse_args=list(argv), _cli_show_env_vars=True)
    except ValidationError as exc:
        problems = "; ".join(f"{flag_for(e['loc'])}: {e['msg']}" for e in exc.errors())
    except SettingsError as exc:
        problems = str(exc)
    print(f"usage: {prog} --help\n{prog}: error: {problems}", file=sys.stderr)
    raise SystemExit(2)


def run_command(name: str, argv: Sequence[str]) -> int:
    module_name, class_name = COMMANDS[name].split(":")
    command: Command = parse(getattr(importlib.import_module(module_name), class_name), argv)
    return command.run()
