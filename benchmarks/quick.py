"""``--quick``, shared by every benchmark: the tiniest settings that still run every stage, so CI can
prove each documented command works in well under a minute on two cores.

A quick run prints what it overrode when it starts and again right above its JSON line, and leaves the
JSON keys as a full run prints them: a quick figure is a smoke test, never a measurement to quote. A flag
given on the command line wins over the quick value, except for the sizes a benchmark names as caps
(rounds, feedback per round): those are held at the quick value, so a documented full-size command
stays quick under ``--quick``, and the banner says what was asked. Quick runs never write into ``./data``: what a
benchmark would keep there goes to a temporary directory unless ``--data-dir`` says where (the
dequantized base to one shared temporary folder, see ``hf_cache``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

HELP = "a smoke run: the tiniest settings that still run every stage; its figures are not measurements"


def add_quick_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help=HELP)


def given(parser: argparse.ArgumentParser, dest: str, argv: Sequence[str]) -> bool:
    """Whether the user typed the option for ``dest`` (``--x V`` or ``--x=V``)."""
    for action in parser._actions:  # argparse has no public way to tell a default from a typed value
        if action.dest == dest:
            return any(a == o or a.startswith(o + "=") for o in action.option_strings for a in argv)
    return False


def apply_quick(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    overrides: Mapping[str, Any],
    argv: Sequence[str] | None = None,
    caps: Collection[str] = (),
) -> dict[str, Any]:
    """With ``--quick``, set each override the user did not type; return what was applied ({} otherwise).

    Keys that are not argparse destinations are applied too (as attributes): benchmarks use them for
    settings they have no flag for, and they are printed alike. A key in ``caps`` is a size: a larger
    typed value is lowered to the quick one (shown as ``rounds=1 (asked 3)``).
    """
    if not getattr(args, "quick", False):
        return {}
    argv = list(sys.argv[1:] if argv is None else argv)
    applied = {}
    for dest, value in overrides.items():
        if not given(parser, dest, argv):
            setattr(args, dest, value)
            applied[dest] = value
        elif dest in caps and getattr(args, dest) > value:
            applied[dest] = f"{value} (asked {getattr(args, dest)})"
            setattr(args, dest, value)
    return applied


def parse(
    parser: argparse.ArgumentParser, overrides: Mapping[str, Any], argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Add ``--quick`` to ``parser``, parse ``argv`` (default: the command line), apply ``overrides``
    (``apply_quick``) and print the banner; returns the arguments and what was applied."""
    add_quick_flag(parser)
    args = parser.parse_args(argv)
    applied = apply_quick(parser, args, overrides, argv)
    announce(applied, args.quick)
    return args, applied


def calm_threads(applied: dict[str, Any]) -> None:
    """One OpenMP thread that sleeps while it waits, for a quick run that trains with torch (call it
    before torch is imported). With OpenMP's default spin-waiting, a torch process beside any other busy
    process on two cores can stall for tens of seconds a step; a smoke test must not depend on an idle
    machine. Recorded in ``applied`` so the banner shows it; variables already set are left alone."""
    import os

    for name, value in (("OMP_WAIT_POLICY", "PASSIVE"), ("OMP_NUM_THREADS", "1")):
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value


def banner(applied: Mapping[str, Any]) -> str:
    settings = ", ".join(f"{k if k.isupper() else k.replace('_', '-')}={v}" for k, v in applied.items())
    what = f"overrides {settings}" if settings else "no overrides (a full run is this small already)"
    return f"QUICK RUN (smoke test, not a measurement): {what}"


def announce(applied: Mapping[str, Any] | None, quick: bool) -> None:
    """Print the quick-run banner (no-op for a full run); flushed, so it sits beside the figures."""
    if quick:
        print(banner(applied or {}), flush=True)


def hf_cache(data_dir: str | Path | None = None) -> Path:
    """Where a quick run keeps the GGUF dequantized for transformers: DATA_DIR/hf-base when a data
    directory is given, else one folder in the system's temporary directory that every quick run
    shares. Dequantizing takes 15 s on an idle machine and over a minute on a busy one, and four
    benchmarks need it: made once (517 MB, written atomically by ``ensure_hf_base``), then reused."""
    if data_dir is not None:
        return Path(data_dir) / "hf-base"
    return Path(tempfile.gettempdir()) / "playground-quick-hf-base"


def scratch_dir(prefix: str, data_dir: str | Path | None = None) -> Path:
    """Where a quick run keeps what a full run keeps under ./data: ``data_dir`` if given, else a new
    temporary directory."""
    if data_dir is not None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=prefix))
