"""JSONL files written whole or not at all, and scrubbing deleted text out of JSONL files.

``write_jsonl`` writes to a temporary name beside the target and renames it when complete, so a failed
export never leaves a truncated file where a good one is expected. ``scrub_jsonl`` rewrites the JSONL
files under a directory without the lines that contain deleted text (the training cycle keeps a copy
of each dataset it read next to its run, for inspection and reproduction).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON lines to ``path`` atomically; returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def scrub_jsonl(directory: str | Path, texts: frozenset[str] | set[str]) -> int:
    """Drop, from every ``*.jsonl`` file under ``directory``, each line in which some string equals one
    of ``texts`` (a message as stored is copied verbatim into a dataset's prompt, chosen, rejected or
    completion). Returns the number of lines removed. The same text written by someone else goes too:
    these are copies for inspection, and leaving a deleted text in one would be the worse error."""
    directory = Path(directory)
    texts = {t for t in texts if t}
    if not texts or not directory.is_dir():
        return 0
    removed = 0
    for path in sorted(directory.rglob("*.jsonl")):
        kept: list[str] = []
        dropped = 0
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short: its text is not JSON-escaped whole, look as is
                    if any(t in line for t in texts):
                        dropped += 1
                    else:
                        kept.append(line)
                    continue
                if any(s in texts for s in _strings(row)):
                    dropped += 1
                else:
                    kept.append(line)
        if dropped:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.writelines(kept)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            removed += dropped
    return removed
