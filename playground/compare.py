"""The Compare tab: one prompt, two replies streamed side by side, and a vote (A better, B better, tie,
both bad) stored as a pairwise preference with both replies, what differed and who voted.

Anonymous by default, as in Chatbot Arena: the sides are shuffled and shown as "Model A" / "Model B";
the names appear after the vote. A *mode* says where the two replies come from; each side is a
``Contestant``: a label and a function that starts a streamed reply. Adding a mode is a few lines:

    CompareMode("presets", "Two presets", make_pair=..., choices=lambda: [(p.name, p.id) for p in ...])

where ``make_pair(choice_a, choice_b, params)`` returns two Contestants whose ``start(messages)``
returns a ``models.base.Generation`` or a ``PresetRun`` (whose preset and trace are stored with the
reply). The round itself (streaming, the content checks, storing) is the reply service's ``run_round``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import gradio as gr

from feedback_store.canary import Canary
from feedback_store.store import FeedbackStore, StoreError
from feedback_store.text import clean_input
from models.base import ChatMessage, GenerationError, SamplingParams
from models.service import ModelService
from playground.access import owner_id
from playground.controls import SamplingControls, generate_queue
from playground.feedback_ui import render_guidance
from playground.presets.library import PresetLibrary
from playground.replies import (
    MAX_MESSAGE_CHARS,
    Answerer,
    Stream,
    answer_prompt,
    start_prompt,
    start_replies,
)
from playground.safety import Safety
from settings import Settings

log = logging.getLogger(__name__)

VOTE_TEXT = {
    "a": "Model A is better",
    "b": "Model B is better",
    "tie": "It's a tie",
    "both_bad": "Both are bad",
}


@dataclass(frozen=True)
class Contestant:
    """One side of a comparison."""

    label: str  # shown after the vote (at once when not anonymous) and stored with the vote
    start: Callable[[Sequence[ChatMessage]], Stream]  # a preset run's preset id is stored with the reply


@dataclass(frozen=True)
class CompareMode:
    key: str  # stored as comparisons.mode
    title: str
    make_pair: Callable[[str | None, str | None, SamplingParams], tuple[Contestant, Contestant]]
    choices: Callable[[], list[tuple[str, str]]] = lambda: []  # what A and B can be ([] = nothing to pick)
    unavailable: Callable[[], str | None] = lambda: None  # why the mode cannot run now


def samples_mode(service: ModelService) -> CompareMode:
    """Two samples of the deployed version with different seeds."""

    def make_pair(_a: str | None, _b: str | None, params: SamplingParams) -> tuple[Contestant, Contestant]:
        if params.greedy:
            raise ValueError("Two samples at temperature 0 are the same reply: raise the temperature.")
        seed = params.with_seed().seed or 0
        name = service.served.name

        def side(s: int) -> Contestant:
            p = replace(params, seed=s)
            return Contestant(f"{name} · seed {s}", lambda messages: service.stream(messages, p))

        return side(seed), side((seed + 1) % 2**32)

    return CompareMode("samples", "Two samples", make_pair)


def versions_mode(service: ModelService) -> CompareMode:
    """Two model versions, same seed (so only the model differs)."""

    def choices() -> list[tuple[str, str]]:
        return [(f"v{vid} {name}", str(vid)) for vid, name in service.available_versions()]

    def unavailable() -> str | None:
        if len(service.available_versions()) < 2:
            return "Only one model version can be served right now: train a new version to compare versions."
        return None

    def make_pair(a: str | None, b: str | None, params: SamplingParams) -> tuple[Contestant, Contestant]:
        names = {value: label for label, value in choices()}
        if a not in names or b not in names:
            raise ValueError("Pick a version for A and for B.")
        if a == b:
            raise ValueError("Pick two different versions.")
        p = params.with_seed()

        def side(value: str) -> Contestant:
            return Contestant(
                names[value], lambda messages: service.stream(messages, p, version_id=int(value))
            )

        return side(a), side(b)

    return CompareMode("versions", "Two model versions", make_pair, choices, unavailable)


def canary_pair(
    service: ModelService, store: FeedbackStore, canary: Canary, params: SamplingParams
) -> tuple[Contestant, Contestant]:
    """A canary battle: the live candidate against the deployed version, same seed, so that only the
    model differs (the tab shuffles the sides as in any anonymous battle)."""
    p = params.with_seed()

    def side(version_id: int, role: str) -> Contestant:
        name = store.versions.get(version_id).name
        return Contestant(
            f"v{version_id} {name} ({role})",
            lambda messages: service.stream(messages, p, version_id=version_id),
        )

    return side(canary.candidate_id, "candidate"), side(canary.deployed_id, "deployed")


def presets_mode(service: ModelService, library: PresetLibrary) -> CompareMode:
    """The same question through two prompt-technique presets, on the deployed version, same seed."""

    def choices() -> list[tuple[str, str]]:
        return library.choices()

    def make_pair(a: str | None, b: str | None, params: SamplingParams) -> tuple[Contestant, Contestant]:
        if not a or not b:
            raise ValueError("Pick a preset for A and for B.")
        if a == b:
            raise ValueError("Pick two different presets.")
        p = params.with_seed()

        def side(preset_id: str) -> Contestant:
            preset = library.get(preset_id)
            return Contestant(
                preset.name, lambda messages: library.run(preset, messages, preset.sampling(p), service)
            )

        return side(a), side(b)

    return CompareMode("presets", "Two presets", make_pair, choices)


@dataclass
class CompareRound:
    """One prompt and its two stored replies, waiting for (or having) a vote."""

    message_a: int
    message_b: int
    label_a: str
    label_b: str
    mode: str
    anonymous: bool
    user: str  # who asked (``access.owner_id``): the vote is theirs
    vote: str | None = None


class CompareTab(Answerer):
    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        service: ModelService,
        modes: Sequence[CompareMode] | None = None,
        presets: PresetLibrary | None = None,
        *,
        safety: Safety,
    ):
        super().__init__(settings, store, service, safety=safety)
        if modes is not None:
            found = list(modes)
        else:
            found = [samples_mode(service), versions_mode(service)]
            if presets is not None:
                found.append(presets_mode(service, presets))
        self.modes = {m.key: m for m in found}
        self.rng = random.Random()  # noqa: S311 (which battles are canary battles, not security)

    def canary_for(self, key: str, anonymous: bool, user: str) -> Canary | None:
        """The live canary if this battle is to be one of its battles: an anonymous two-samples battle
        (the ordinary one), drawn with the canary's share, while the canary's deployed version is the one
        served, for a user whose canary votes still count."""
        if key != "samples" or not anonymous:
            return None
        try:
            canary = self.store.canaries.live()
            if canary is None or canary.deployed_id != self.service.version_id:
                return None
            if self.rng.random() >= canary.share:
                return None
            if self.store.canaries.user_votes(canary, user) >= canary.per_user:
                return None
        except Exception as exc:  # a locked database: an ordinary battle instead
            log.warning("canary lookup failed: %s", exc)
            return None
        return canary

    # -- handlers ------------------------------------------------------------------------------------
    def on_mode(self, key: str):
        mode = self.modes[key]
        choices = mode.choices()
        why = mode.unavailable()
        pick = bool(choices)
        a = gr.update(choices=choices, value=choices[0][1] if choices else None, visible=pick)
        b = gr.update(choices=choices, value=choices[1][1] if len(choices) > 1 else None, visible=pick)
        return a, b, f"⚠️ {why}" if why else "", gr.update(interactive=why is None)

    @staticmethod
    def _votes(enabled: bool) -> list:
        return [gr.update(interactive=enabled) for _ in VOTE_TEXT]

    def run(
        self,
        request: gr.Request,
        prompt,
        key,
        pick_a,
        pick_b,
        anonymous,
        system_prompt,
        browser_key,
        *sampling,
    ):
        """Stream two replies side by side (a generator), store them, then enable the vote.

        The request comes first: Gradio passes it to a positional parameter annotated ``gr.Request``
        that stands before the inputs (here the sampling controls, the last seven). ``browser_key``:
        the page's, so that an anonymous user's rounds are theirs in "My data"."""
        user = owner_id(request, browser_key)
        keep = (gr.update(), gr.update(), gr.update(), gr.update(), *self._votes(False))
        prompt = clean_input(prompt).strip()[:MAX_MESSAGE_CHARS]
        mode = self.modes.get(key)
        try:
            if not prompt:
                raise ValueError("Type a prompt first.")
            if mode is None:
                raise ValueError(f"Unknown mode {key!r}.")
            if why := mode.unavailable():
                raise ValueError(why)
            params = SamplingControls.to_params(*sampling)
            canary = self.canary_for(key, anonymous, user)
            if canary is not None:
                a, b = canary_pair(self.service, self.store, canary, params)
            else:
                a, b = mode.make_pair(pick_a, pick_b, params)
        except (ValueError, TypeError) as exc:
            gr.Warning(str(exc))
            yield keep
            return
        if anonymous and random.random() < 0.5:  # noqa: S311 (a coin flip for the display, not security)
            a, b = b, a
        try:
            asked = start_prompt(self.store, self.safety, request, "compare", prompt, system_prompt, user)
            if asked.notice:
                gr.Warning(asked.notice)
            replies = start_replies(asked.messages, (a.start, b.start))
        except (ValueError, GenerationError) as exc:  # over a limit, refused, or a reply cannot start
            gr.Warning(str(exc))
            yield keep
            return
        labels = ("Model A", "Model B") if anonymous else (a.label, b.label)

        def view(result: str, state: CompareRound | None):
            shown = [
                gr.update(
                    value=[{"role": "user", "content": prompt}, {"role": "assistant", "content": r.display}],
                    label=label,
                )
                for r, label in zip(replies, labels, strict=True)
            ]
            return (*shown, state, result, *self._votes(False))

        yield view("Generating both replies…", None)
        yield from answer_prompt(
            self.store, self.safety, asked, replies, lambda: view("Generating both replies…", None)
        )
        ids = [r.message_id for r in replies]
        if None in ids:
            yield view("One of the replies failed, so there is nothing to vote on. Try again.", None)
            return
        mode_key = "canary" if canary is not None else mode.key
        state = CompareRound(ids[0], ids[1], a.label, b.label, mode_key, bool(anonymous), user)
        # The vote opens in a follow-up step (open_vote): Gradio re-sends a generator's last update
        # when it completes, which would wipe a vote's result if one could be cast before that.
        yield view("Both replies are in.", state)

    def open_vote(self, state: CompareRound | None):
        if state is None or state.vote is not None:
            return gr.update(), *[gr.update() for _ in VOTE_TEXT]
        return "**Which reply is better?** Vote below.", *self._votes(True)

    def _vote(self, state: CompareRound | None, vote: str, request: gr.Request):
        if state is None:
            gr.Warning("Run a comparison first.")
            return state, gr.update(), gr.update(), gr.update()
        if why := self.safety.limit("feedback", request):
            gr.Warning(why)
            return state, gr.update(), gr.update(), gr.update()
        try:
            self.store.feedback.record_comparison(
                state.message_a,
                state.message_b,
                state.user,
                vote,
                mode=state.mode,
                label_a=state.label_a,
                label_b=state.label_b,
                anonymous=state.anonymous,
            )
        except StoreError as exc:
            gr.Warning(str(exc))
            return state, gr.update(), gr.update(), gr.update()
        state.vote = vote
        if state.mode == "canary":  # the vote may be the one that decides
            self.store.canaries.try_settle()
        result = (
            f"**Thanks: {VOTE_TEXT[vote]}.** Model A was **{state.label_a}**, "
            f"Model B was **{state.label_b}**. (Click another vote to change it.)"
        )
        return state, result, gr.update(label=f"A: {state.label_a}"), gr.update(label=f"B: {state.label_b}")

    def vote_a(self, state, request: gr.Request):
        return self._vote(state, "a", request)

    def vote_b(self, state, request: gr.Request):
        return self._vote(state, "b", request)

    def vote_tie(self, state, request: gr.Request):
        return self._vote(state, "tie", request)

    def vote_both_bad(self, state, request: gr.Request):
        return self._vote(state, "both_bad", request)

    # -- layout --------------------------------------------------------------------------------------
    def render(self, browser_key: gr.BrowserState) -> None:
        """``browser_key``: the page's shared ``history.browser_key_state()``."""
        state = gr.State(None)
        render_guidance()
        first = next(iter(self.modes))
        with gr.Row():
            mode = gr.Radio(
                [(m.title, m.key) for m in self.modes.values()],
                value=first,
                label="Compare",
                elem_id="compare-mode",
            )
            anonymous = gr.Checkbox(
                True, label="Anonymous (names shown after the vote)", elem_id="compare-anonymous"
            )
        with gr.Row():
            pick_a = gr.Dropdown(label="A", visible=False, elem_id="compare-pick-a")
            pick_b = gr.Dropdown(label="B", visible=False, elem_id="compare-pick-b")
        mode_note = gr.Markdown("", elem_id="compare-mode-note")
        with gr.Accordion("System prompt and sampling", open=False):
            system_prompt = gr.Textbox(
                value=self.settings.server.system_prompt, lines=2, label="System prompt"
            )
            controls = SamplingControls.render()
        with gr.Row():
            prompt = gr.Textbox(
                placeholder="One prompt, two replies", show_label=False, scale=5, elem_id="compare-input"
            )
            go = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-go")
        with gr.Row(equal_height=True):
            chat_a = gr.Chatbot(label="Model A", height=360, elem_id="compare-a", feedback_options=None)
            chat_b = gr.Chatbot(label="Model B", height=360, elem_id="compare-b", feedback_options=None)
        with gr.Row():
            buttons = {
                "a": gr.Button("👈 A is better", interactive=False, elem_id="vote-a"),
                "b": gr.Button("👉 B is better", interactive=False, elem_id="vote-b"),
                "tie": gr.Button("🤝 Tie", interactive=False, elem_id="vote-tie"),
                "both_bad": gr.Button("👎 Both are bad", interactive=False, elem_id="vote-both-bad"),
            }
        result = gr.Markdown("", elem_id="compare-result")

        mode.change(self.on_mode, [mode], [pick_a, pick_b, mode_note, go])
        run_inputs = [
            prompt,
            mode,
            pick_a,
            pick_b,
            anonymous,
            system_prompt,
            browser_key,
            *controls.components,
        ]
        run_outputs = [chat_a, chat_b, state, result, *buttons.values()]
        generate = generate_queue(self.settings.inference.concurrency)
        for trigger in (go.click, prompt.submit):
            trigger(self.run, run_inputs, run_outputs, **generate).then(
                self.open_vote, [state], [result, *buttons.values()]
            )
        handlers = {"a": self.vote_a, "b": self.vote_b, "tie": self.vote_tie, "both_bad": self.vote_both_bad}
        for key, button in buttons.items():
            button.click(handlers[key], [state], [state, result, chat_a, chat_b])
