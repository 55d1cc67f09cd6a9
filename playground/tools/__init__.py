"""Tools a ReAct preset can call: the ``Tool`` contract, the error a tool raises for bad input, and the
default tool box (calculator, knowledge-base search, clock).

A tool takes one line of text (what the model wrote between the brackets of ``Action: tool[...]``) and
returns text for the ``Observation:``. Model output is only ever parsed, never executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


class ToolError(ValueError):
    """The tool refused its input; the message is shown to the model (and in the trace) as the observation."""


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str  # one line: what it does and what input it takes, shown to the model

    def run(self, arg: str) -> str: ...


def default_tools(knowledge_base: Tool | None = None) -> dict[str, Tool]:
    """Calculator and clock, plus knowledge-base search when a knowledge base is given."""
    from playground.tools.calculator import Calculator
    from playground.tools.clock import Clock

    tools: list[Tool] = [Calculator(), Clock()]
    if knowledge_base is not None:
        tools.insert(1, knowledge_base)
    return {t.name: t for t in tools}


def describe_tools(tools: Mapping[str, Tool]) -> str:
    """The tool list as the model sees it: one ``- name[input]: description`` line per tool."""
    return "\n".join(f"- {t.description}" for t in tools.values())
