"""ReAct (Yao et al. 2022): the model alternates Thought / Action / Observation until it gives a
Final Answer. Actions run real tools (calculator, knowledge-base search, clock).

The pure core is ``parse_react`` (read one model turn, tolerating the usual variations) and
``ReactLoop`` (loop control: unknown tools, unreadable actions, repeated identical actions, and the
step limit all end or continue cleanly with a message). ``run_react`` only drives them with model
calls and tool runs. Model output is parsed, never executed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.base import ChatMessage
from playground.presets.techniques.common import Conversation, fill, require_placeholders
from playground.tools import Tool, ToolError, describe_tools

if TYPE_CHECKING:
    from playground.presets.runner import RunContext

log = logging.getLogger(__name__)

KNOWN_TOOLS = ("calculator", "search", "clock")
OBSERVATION_STOPS = ("Observation:", "\nObservation")
MAX_OBSERVATION_CHARS = 1000

DEFAULT_INSTRUCTIONS = """Answer the question. You can use these tools:
{tools}

Use exactly this format:
Thought: what you need to do next
Action: tool_name[input]
Then stop and wait: the Observation (the tool's result) will be given to you. Repeat Thought/Action as needed.
When you know the answer, write:
Thought: I know the answer.
Final Answer: the answer

Example:
Question: What is 12 times 7?
Thought: I should multiply 12 by 7.
Action: calculator[12 * 7]
Observation: 84
Thought: I know the answer.
Final Answer: 84"""


class ReactOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_steps: int = Field(6, ge=1, le=20, description="model turns before the run stops")
    tools: list[str] = Field(default_factory=lambda: list(KNOWN_TOOLS), description="tools the model may use")
    instructions: str = Field(
        DEFAULT_INSTRUCTIONS, description="added to the system prompt; must contain {tools}"
    )
    step_max_tokens: int = Field(160, ge=16, le=2048, description="token budget of one Thought/Action turn")

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in KNOWN_TOOLS]
        if unknown:
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(KNOWN_TOOLS)}")
        if not value:
            raise ValueError("list at least one tool")
        return value

    @field_validator("instructions")
    @classmethod
    def _needs_tools(cls, value: str) -> str:
        return require_placeholders(value, "tools", hint=" (where the tool list goes)")


# -- parsing -----------------------------------------------------------------------------------------
_FINAL = re.compile(r"final\s*answer\s*:\s*", re.IGNORECASE)
_ACTION = re.compile(r"^[ \t]*action\s*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_ACTION_INPUT = re.compile(r"^[ \t]*action\s*input\s*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_NEXT_LABEL = re.compile(r"\n\s*(?:thought|action|observation|question)\s*:", re.IGNORECASE)
_THOUGHT_LABEL = re.compile(r"^\s*thought\s*:\s*", re.IGNORECASE)
_HAS_THOUGHT = re.compile(r"^\s*thought\s*:", re.IGNORECASE | re.MULTILINE)
_TOOL_BRACKETS = re.compile(r"^([A-Za-z_][\w.-]*)\s*[\[(]\s*(.*?)\s*[\])]?\s*$", re.DOTALL)
_TOOL_ALONE = re.compile(r"^([A-Za-z_][\w.-]*)\s*$")
_TOOL_COLON = re.compile(r"^([A-Za-z_][\w.-]*)\s*:\s*(.+)$")
_TOOL_WORDS = re.compile(r"^([A-Za-z_][\w.-]*)\s+(.+)$")


@dataclass(frozen=True)
class ReactParse:
    thought: str = ""
    action: str | None = None  # tool name as written
    action_input: str = ""
    action_text: str | None = None  # the raw text after "Action:" (also when unreadable)
    final_answer: str | None = None

    @property
    def unreadable_action(self) -> bool:
        return self.action_text is not None and self.action is None


def _strip_quotes(text: str) -> str:
    return text.strip().strip("\"'").strip()


def parse_react(text: str) -> ReactParse:
    """Read one model turn: its thought, its action (tool and input) and/or its final answer.

    Accepted action forms: ``tool[input]``, ``tool(input)``, ``tool: input``, ``tool input``, and
    ``tool`` followed by an ``Action Input:`` line. Markdown emphasis and backticks are ignored.
    When both an action and a final answer appear, the one written first counts.
    """
    clean = text.replace("**", "").replace("`", "").strip()
    final = _FINAL.search(clean)
    action = _ACTION.search(clean)
    if final and (action is None or final.start() < action.start()):
        answer = clean[final.end() :]
        cut = _NEXT_LABEL.search(answer)
        answer = (answer[: cut.start()] if cut else answer).strip()
        return ReactParse(thought=_thought(clean[: final.start()]), final_answer=answer)
    if action is None:
        return ReactParse(thought=_thought(clean))
    raw = action.group(1).strip()
    tool, tool_input = None, ""
    if m := _TOOL_BRACKETS.match(raw):
        tool, tool_input = m.group(1), m.group(2)
    elif m := _TOOL_ALONE.match(raw):
        tool = m.group(1)
        given = _ACTION_INPUT.search(clean, action.end())
        tool_input = given.group(1) if given else ""
    elif (m := _TOOL_COLON.match(raw)) or (m := _TOOL_WORDS.match(raw)):
        tool, tool_input = m.group(1), m.group(2)
    return ReactParse(
        thought=_thought(clean[: action.start()]),
        action=tool,
        action_input=_strip_quotes(tool_input),
        action_text=raw,
    )


def _thought(text: str) -> str:
    text = text.strip()
    # A model sometimes starts by repeating "Question: ..." — keep only what follows the last Thought label.
    parts = re.split(r"(?im)^\s*thought\s*:\s*", text)
    return _THOUGHT_LABEL.sub("", parts[-1]).strip()


# -- loop control ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    kind: str  # "act" | "error" | "final" | "stop"
    thought: str = ""
    tool: str | None = None
    tool_input: str = ""
    answer: str = ""
    message: str = ""  # the error observation, the stop reason, or a notice for a final answer


@dataclass
class ReactStep:
    said: str  # the model's turn as it goes back into the prompt
    observation: str | None = None


@dataclass
class ReactLoop:
    """The state of one ReAct episode. Feed it each model turn with ``decide`` and each tool result
    with ``observe``; ``ready()`` turns False (with ``stop_reason``) at the step limit."""

    tool_names: Sequence[str]
    max_steps: int
    steps: list[ReactStep] = field(default_factory=list)
    stop_reason: str | None = None
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def ready(self) -> bool:
        if self.stop_reason is None and len(self.steps) >= self.max_steps:
            self.stop_reason = f"the step limit of {self.max_steps} was reached without a final answer"
        return self.stop_reason is None

    def transcript(self) -> list[ChatMessage]:
        """The episode so far as chat turns: each model turn, then its observation as the next user turn."""
        turns: list[ChatMessage] = []
        for step in self.steps:
            turns.append(ChatMessage(role="assistant", content=step.said))
            if step.observation is not None:
                turns.append(ChatMessage(role="user", content=f"Observation: {step.observation}"))
        return turns

    def decide(self, output: str) -> Decision:
        parsed = parse_react(output)
        thought = parsed.thought
        if parsed.final_answer is not None:
            if parsed.final_answer:
                return Decision("final", thought=thought, answer=parsed.final_answer)
            return self._stop("the model wrote 'Final Answer:' with nothing after it", thought)
        if parsed.action_text is None:
            if _HAS_THOUGHT.search(output):  # a thought that stops short: ask for the next move
                key = ("?thought", " ".join(output.lower().split()))
                message = (
                    "You wrote a thought but no action. Continue with Action: tool_name[input], "
                    "or with Final Answer: the answer."
                )
                return self._error(key, message, output.strip(), thought)
            if output.strip():
                return Decision(
                    "final",
                    thought="",
                    answer=output.strip(),
                    message="The model did not use the Thought/Action format; its reply is taken as the answer.",
                )
            return self._stop("the model returned an empty reply", thought)
        said_thought = f"Thought: {thought}\n" if thought else ""
        if parsed.unreadable_action:
            key = ("?", " ".join(parsed.action_text.lower().split()))
            message = (
                f"Could not read the action {parsed.action_text!r}. "
                "Write it as Action: tool_name[input], e.g. Action: calculator[2 * 3]."
            )
            return self._error(key, message, f"{said_thought}Action: {parsed.action_text}", thought)
        tool = next((t for t in self.tool_names if t.lower() == parsed.action.lower()), None)
        key = ((tool or parsed.action).lower(), " ".join(parsed.action_input.lower().split()))
        said = f"{said_thought}Action: {tool or parsed.action}[{parsed.action_input}]"
        if tool is None:
            message = f"Unknown tool {parsed.action!r}. Available tools: {', '.join(self.tool_names)}."
            return self._error(key, message, said, thought)
        if key in self._seen:
            return self._stop(
                f"the model repeated the action {tool}[{parsed.action_input}]; stopped to avoid a loop",
                thought,
            )
        self._seen.add(key)
        self.steps.append(ReactStep(said))
        return Decision("act", thought=thought, tool=tool, tool_input=parsed.action_input)

    def observe(self, observation: str) -> None:
        if not self.steps or self.steps[-1].observation is not None:
            raise RuntimeError("observe() must follow an action")
        text = observation.strip()
        if len(text) > MAX_OBSERVATION_CHARS:
            text = text[: MAX_OBSERVATION_CHARS - 1] + "…"
        self.steps[-1].observation = text

    def _error(self, key: tuple[str, str], message: str, said: str, thought: str) -> Decision:
        if key in self._seen:
            return self._stop(f"the model repeated the same invalid action ({message})", thought)
        self._seen.add(key)
        self.steps.append(ReactStep(said))
        return Decision("error", thought=thought, message=message)

    def _stop(self, reason: str, thought: str) -> Decision:
        self.stop_reason = reason
        return Decision("stop", thought=thought, message=reason)


def trajectory_turns(question_message: str, trajectory: str, answer: str) -> list[ChatMessage]:
    """A worked ReAct example as chat turns, in the exact shape of a live episode: the question, each
    Thought/Action turn, each ``Observation:`` as the next user turn, and the final answer."""
    turns = [ChatMessage(role="user", content=question_message)]
    said: list[str] = []
    for line in trajectory.strip().splitlines():
        if line.strip().lower().startswith("observation:"):
            if said:
                turns.append(ChatMessage(role="assistant", content="\n".join(said).strip()))
                said = []
            turns.append(ChatMessage(role="user", content=line.strip()))
        elif line.strip():
            said.append(line.strip())
    said_text = "\n".join(said).strip()
    if "final answer:" not in said_text.lower():
        said_text = f"{said_text}\nThought: I know the answer.\nFinal Answer: {answer.strip()}".strip()
    turns.append(ChatMessage(role="assistant", content=said_text))
    return turns


def run_tool(tools: Mapping[str, Tool], name: str, arg: str) -> tuple[str, bool]:
    """(observation, is_error): a tool's refusal or crash becomes an error observation, never an exception."""
    try:
        return tools[name].run(arg), False
    except ToolError as exc:
        return f"Error: {exc}", True
    except Exception as exc:  # a broken tool must not take the run down
        log.exception("tool %s failed on %r", name, arg)
        return f"Error: the {name} tool failed ({type(exc).__name__}).", True


def system_prompt(base: str | None, instructions: str, tools: Mapping[str, Tool]) -> str:
    react = fill(instructions, {"tools": describe_tools(tools), "tool_names": ", ".join(tools)})
    return f"{base.strip()}\n\n{react}" if base and base.strip() else react


def run_react(ctx: RunContext, conv: Conversation) -> None:
    opts: ReactOptions = ctx.preset.options
    tools = {name: ctx.tools[name] for name in opts.tools if name in ctx.tools}
    missing = [name for name in opts.tools if name not in ctx.tools]
    if missing:
        ctx.notice(f"Tool(s) not available in this run: {', '.join(missing)}.")
    if not tools:
        raise ValueError("this ReAct preset has no available tools")
    examples = [
        turn
        for e in ctx.examples
        for turn in trajectory_turns(
            fill(ctx.preset.template, {"question": e.question}), e.reasoning, e.answer
        )
    ]
    base = conv.messages(
        fill(ctx.preset.template, {"question": conv.question}),
        system=system_prompt(conv.system, opts.instructions, tools),
        examples=examples,
    )
    stops = tuple(dict.fromkeys(ctx.params.stop + OBSERVATION_STOPS))[:8]
    params = replace(
        ctx.params, stop=stops, max_new_tokens=min(ctx.params.max_new_tokens, opts.step_max_tokens)
    )
    loop = ReactLoop(list(tools), opts.max_steps)
    last = None
    while loop.ready():
        n = len(loop.steps) + 1
        last = ctx.call(base + loop.transcript(), params, stage=f"step {n}", stream="partial")
        decision = loop.decide(last.text)
        if decision.thought:
            ctx.emit("thought", decision.thought, title=f"Thought {n}")
        if decision.kind == "act":
            ctx.emit(
                "tool_call",
                f"{decision.tool}[{decision.tool_input}]",
                title=f"Action {n}: {decision.tool}[{decision.tool_input}]",
                tool=decision.tool,
                input=decision.tool_input,
            )
            observation, failed = run_tool(tools, decision.tool, decision.tool_input)
            loop.observe(observation)
            ctx.emit(
                "observation",
                loop.steps[-1].observation,
                title=f"Observation {n}" + (" (error)" if failed else ""),
                tool=decision.tool,
                error=failed,
            )
        elif decision.kind == "error":
            loop.observe(decision.message)
            ctx.emit("observation", decision.message, title=f"Observation {n} (error)", error=True)
        elif decision.kind == "final":
            if decision.message:
                ctx.notice(decision.message)
            ctx.finish(decision.answer, last)
            return
        else:
            break
    ctx.notice(f"ReAct stopped: {loop.stop_reason}.")
    ctx.finish(f"I could not finish: {loop.stop_reason}.", last)
