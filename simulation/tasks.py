"""The prompt sets simulated users chat on, and their fixed train / held-out split.

Data files (written for this benchmark, one JSON object a line: ``id``, ``kind``, ``prompt``, for
factual questions ``answers``, and ``group`` for near-duplicates):

- ``loop_sentiment.jsonl``: 220 prompts in the style of the DPO paper's controlled sentiment
  generation: review requests, continuations of IMDB-like review openings of either polarity, and
  mundane or unpleasant everyday experiences (so the base model's sentiment varies).
- ``loop_facts.jsonl``: 222 factual questions with accepted answers (capitals, languages, continents,
  currencies, general knowledge).
- ``loop_capability.jsonl``: 40 further factual questions, disjoint from both, for the capability check.

The split is a hash of the task's group (not a random draw), so a task is held out in every run and the
model never sees a held-out prompt through feedback. Near-duplicates share a group and so a side: the 100
continuations are 25 review openings with 4 endings each ("..., but", "... and honestly"), and a held-out
ending of an opening trained on would measure memory, not generalisation. A task without a group is its
own (its id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_FILES = {
    "sentiment": TASKS_DIR / "loop_sentiment.jsonl",
    "facts": TASKS_DIR / "loop_facts.jsonl",
    "capability": TASKS_DIR / "loop_capability.jsonl",
}
HELDOUT_FRACTION = 0.2
SPLIT_SALT = "loop-split-v1"


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    kind: str = ""
    answers: tuple[str, ...] = ()
    group: str = ""
    """Tasks with the same group are near-duplicates and land on the same side of the split."""

    @property
    def split_key(self) -> str:
        return self.group or self.id

    def messages(self, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The conversation a user starts with this prompt (the UI's system prompt first, if any)."""
        out = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*out, {"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class PromptSet:
    name: str
    train: tuple[Task, ...]
    heldout: tuple[Task, ...]


def load_tasks(path: str | Path) -> list[Task]:
    """Read a task file; a malformed line is an error naming the file and line."""
    path = Path(path)
    tasks, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task = Task(
                id=str(row["id"]),
                prompt=str(row["prompt"]),
                kind=str(row.get("kind", "")),
                answers=tuple(str(a) for a in row.get("answers", ())),
                group=str(row.get("group", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: not a task ({exc}); expected id, prompt[, kind, answers, group]"
            ) from exc
        if not task.prompt.strip() or task.id in seen:
            raise ValueError(f"{path}:{number}: empty prompt or repeated id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def is_heldout(key: str, fraction: float = HELDOUT_FRACTION, salt: str = SPLIT_SALT) -> bool:
    """Stable membership of the held-out split (a hash of the task's ``split_key``); another ``salt``
    draws another split of the same groups."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < fraction


def split(name: str, tasks: Sequence[Task], fraction: float = HELDOUT_FRACTION) -> PromptSet:
    train = tuple(t for t in tasks if not is_heldout(t.split_key, fraction))
    heldout = tuple(t for t in tasks if is_heldout(t.split_key, fraction))
    return PromptSet(name, train, heldout)


def prompt_set(name: str, fraction: float = HELDOUT_FRACTION) -> PromptSet:
    """One of the bundled prompt sets (``sentiment`` or ``facts``) or a task file (``.jsonl``), split."""
    if name in TASK_FILES:
        return split(name, load_tasks(TASK_FILES[name]), fraction)
    if not name.endswith(".jsonl") or not Path(name).is_file():
        raise ValueError(
            f"unknown prompt set {name!r}; choose one of {sorted(TASK_FILES)} or a .jsonl task file"
        )
    ps = split(Path(name).stem, load_tasks(name), fraction)
    if not ps.train or not ps.heldout:
        raise ValueError(
            f"{name}: {len(ps.train)} training and {len(ps.heldout)} held-out prompts; the loop needs both "
            f"(about {HELDOUT_FRACTION:.0%} of the groups are held out: add prompts)"
        )
    return ps


def capability_tasks() -> list[Task]:
    return load_tasks(TASK_FILES["capability"])
