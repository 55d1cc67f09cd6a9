"""Gold rewards: the simulated users' true preference, known exactly, so improvement can be measured.

- ``vader``: positive sentiment, the VADER compound score of the reply in [-1, 1] (Hutto & Gilbert
  2014; the lexicon ships with the ``vadersentiment`` package). The DPO paper's controlled sentiment
  generation task used a sentiment classifier as its gold reward in the same way.
- ``concise``: unrelated to sentiment: the reply contains the requested fact (any accepted answer, as a
  whole word, the evaluation gate's checker) and is short:
  ``1[fact] - length_weight * min(words, max_words) / max_words``, in [-length_weight, 1].

Each oracle names the prompt set it is meant for and the gold level above which a simulated user gives
a thumbs up (with Bradley-Terry noise, see ``labelers``).

Your own gold preference plugs in as ``--oracle-file PATH.py:ClassName`` (``load_oracle_file``): a
class with the ``Oracle`` attributes, made with no arguments; its ``prompt_set`` is a bundled set's name
or a task file (``.jsonl``, relative to PATH.py's folder). ``docs/loop.md`` has an example.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simulation.tasks import TASK_FILES, Task, load_tasks
from trainers.gate import FactCheck

_WORD = re.compile(r"\w+", re.UNICODE)


class Oracle(Protocol):
    name: str
    prompt_set: str
    thumbs_threshold: float

    def score(self, task: Task, reply: str) -> float: ...


@dataclass
class VaderOracle:
    """Positive sentiment of the reply (VADER compound score, -1 .. 1)."""

    name: str = "vader"
    prompt_set: str = "sentiment"
    thumbs_threshold: float = 0.5
    _analyzer: Any = field(default=None, repr=False)

    def score(self, task: Task, reply: str) -> float:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return float(self._analyzer.polarity_scores(reply)["compound"])


@dataclass
class ConciseFactOracle:
    """Contains the requested fact, in as few words as possible."""

    name: str = "concise"
    prompt_set: str = "facts"
    thumbs_threshold: float = 0.6
    length_weight: float = 0.5
    max_words: int = 40

    def score(self, task: Task, reply: str) -> float:
        if not task.answers:
            raise ValueError(f"task {task.id} has no accepted answers; the concise oracle needs them")
        correct = FactCheck(task.prompt, task.answers).correct(reply)
        words = len(_WORD.findall(reply))
        return float(correct) - self.length_weight * min(words, self.max_words) / self.max_words


ORACLES = {"vader": VaderOracle, "concise": ConciseFactOracle}


def make_oracle(spec: str) -> Oracle:
    """A bundled oracle by name, or ``PATH.py:ClassName`` (``load_oracle_file``)."""
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return load_oracle_file(spec)
    if spec not in ORACLES:
        raise ValueError(
            f"unknown oracle {spec!r}; choose one of {sorted(ORACLES)} or give your own as PATH.py:ClassName"
        )
    return ORACLES[spec]()


@dataclass
class PluggedOracle:
    """A user's oracle from a file, checked once and then guarded on every score."""

    inner: Any
    name: str
    prompt_set: str
    thumbs_threshold: float

    def score(self, task: Task, reply: str) -> float:
        value = self.inner.score(task, reply)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(
                f"oracle {self.name!r} scored task {task.id} as {value!r}; it must return a finite number"
            )
        return float(value)


def load_oracle_file(spec: str) -> PluggedOracle:
    """``PATH.py:ClassName`` -> that class's instance, or a ValueError saying what is wrong with it."""
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ValueError(f"oracle file {path} does not exist; give --oracle-file PATH.py:ClassName")
    module_name = f"_oracle_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{path} is not a Python file that can be imported")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses in the file look their module up
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module_name
        )
        raise ValueError(f"{path} has no class {class_name!r} (classes there: {', '.join(found) or 'none'})")
    try:
        inner = cls()
    except Exception as exc:
        raise ValueError(
            f"{class_name}() failed: {type(exc).__name__}: {exc}; it is made with no arguments"
        ) from exc
    missing = [a for a in ("name", "prompt_set", "thumbs_threshold", "score") if not hasattr(inner, a)]
    if missing:
        raise ValueError(
            f"{class_name} lacks {', '.join(missing)}: an oracle has name, prompt_set (a bundled set: "
            f"{', '.join(sorted(TASK_FILES))}, or a .jsonl task file), thumbs_threshold and score(task, reply)"
        )
    prompt_set = str(inner.prompt_set)
    if prompt_set not in TASK_FILES:
        tasks_path = Path(prompt_set).expanduser()
        tasks_path = tasks_path if tasks_path.is_absolute() else path.parent / tasks_path
        if not tasks_path.is_file():
            raise ValueError(
                f"{class_name}.prompt_set {prompt_set!r} is neither a bundled set ({', '.join(sorted(TASK_FILES))}) "
                f"nor a task file ({tasks_path} does not exist)"
            )
        load_tasks(tasks_path)  # a malformed line is an error naming it, now rather than mid-run
        prompt_set = str(tasks_path.resolve())
    return PluggedOracle(inner, str(inner.name), prompt_set, float(inner.thumbs_threshold))
