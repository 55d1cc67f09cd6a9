"""An example gold preference for the simulated-user loop: polite replies, on prompts of its own.

    python -m benchmarks.loop --oracle-file examples/polite_oracle.py:PoliteOracle --rounds 1

An oracle is any class made with no arguments that has ``name``, ``prompt_set`` (a bundled set,
"sentiment" or "facts", or a task file: one JSON object a line with ``id`` and ``prompt``, optionally
``group`` for near-duplicates that must stay on one side of the train / held-out split),
``thumbs_threshold`` (the gold level above which a simulated user gives a thumbs up) and
``score(task, reply) -> float`` (the gold reward: higher is better, the same reply always scoring the
same). It runs in the benchmark's process only, never in the served app.
"""

from __future__ import annotations

import re

POLITE = re.compile(
    r"\b(please|thank(s| you)|glad|happy to|kindly|you're welcome|appreciate)\b", re.IGNORECASE
)
RUDE = re.compile(r"\b(stupid|obviously|whatever|shut up|idiot|dumb)\b", re.IGNORECASE)


class PoliteOracle:
    name = "polite"
    prompt_set = "polite_prompts.jsonl"  # next to this file
    thumbs_threshold = 0.5

    def score(self, task, reply: str) -> float:
        """Polite words raise it, rude ones lower it, in [-1, 1]."""
        polite, rude = len(POLITE.findall(reply)), len(RUDE.findall(reply))
        return max(-1.0, min(1.0, 0.5 * polite - 0.5 * rude))
