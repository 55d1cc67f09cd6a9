"""The Rank tab: K replies (K = 2..9, default 4) sampled for one prompt and streamed together; the user
gives each a rank with a dropdown (Gradio 6 has no ranking widget that reports its order: gr.Draggable
never sends it back). Ties are allowed, as in InstructGPT's rankings (y_D > y_C > y_A = y_B): two replies
neither of which is better share a rank. The ranks are checked server-side (every reply ranked, ranks
1 to K, at least two different ones) and stored as a ranking, which the store expands into the pairs of
the InstructGPT reward-model loss: K*(K-1)/2 without ties, tied replies giving no pair.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import gradio as gr

from feedback_store import feedback as fb
from feedback_store.store import StoreError
from feedback_store.text import clean_input
from models.base import GenerationError, SamplingParams
from playground.access import owner_id
from playground.controls import SamplingControls, generate_queue
from playground.feedback_ui import render_guidance
from playground.replies import MAX_MESSAGE_CHARS, Answerer, answer_prompt, start_prompt, start_replies

MAX_K = fb.MAX_RANKED
DEFAULT_K = 4


@dataclass
class RankRound:
    message_ids: list[int]  # in display order
    user: str  # who asked (``access.owner_id``): the ranking is theirs


def ranking_from_ranks(ranks: list[str | int | None], message_ids: list[int]) -> tuple[list[int], list[int]]:
    """Display-ordered ranks ("1" = best, equal ranks for ties) -> (message ids best first, their
    ranks); ValueError says what to fix."""
    k = len(message_ids)
    chosen = [None if r in (None, "") else int(r) for r in ranks[:k]]
    missing = [i + 1 for i, r in enumerate(chosen) if r is None]
    if missing:
        raise ValueError(f"Give every reply a rank (missing: reply {', '.join(map(str, missing))}).")
    if any(not 1 <= r <= k for r in chosen):
        raise ValueError(f"Use the ranks 1 to {k}.")
    if len(set(chosen)) < 2:
        raise ValueError(
            f"Every reply has rank {chosen[0]}: give at least two different ranks "
            "(ties are allowed, but a ranking needs a better and a worse reply)."
        )
    order = sorted(range(k), key=lambda i: chosen[i])  # stable: tied replies keep the display order
    return [message_ids[i] for i in order], [chosen[i] for i in order]


def order_from_ranks(ranks: list[str | int | None], message_ids: list[int]) -> list[int]:
    """Display-ordered ranks -> message ids best first (tied replies in display order)."""
    return ranking_from_ranks(ranks, message_ids)[0]


class RankTab(Answerer):
    def _sampling(self, sampling) -> SamplingParams:
        params = SamplingControls.to_params(*sampling)
        if params.greedy:
            raise ValueError("At temperature 0 every sample is the same reply: raise the temperature.")
        return params.with_seed()

    def run(self, request: gr.Request, prompt, k, system_prompt, browser_key, *sampling):
        """Stream K replies (a generator), store them, then show the rank pickers (the request comes
        first, as in ``CompareTab.run``: the sampling controls are the last seven inputs)."""
        user = owner_id(request, browser_key)
        n_out = 2 * MAX_K + 3  # MAX_K texts, MAX_K rank pickers, state, status, the save button
        keep = tuple(gr.update() for _ in range(n_out))
        prompt = clean_input(prompt).strip()[:MAX_MESSAGE_CHARS]
        try:
            if not prompt:
                raise ValueError("Type a prompt first.")
            k = int(k)
            if not 2 <= k <= MAX_K:
                raise ValueError(f"K must be between 2 and {MAX_K}.")
            params = self._sampling(sampling)
        except (ValueError, TypeError) as exc:
            gr.Warning(str(exc))
            yield keep
            return
        seeds = [((params.seed or 0) + i) % 2**32 for i in range(k)]
        try:
            asked = start_prompt(self.store, self.safety, request, "rank", prompt, system_prompt, user)
            if asked.notice:
                gr.Warning(asked.notice)
            starters = [partial(self.service.stream, params=replace(params, seed=s)) for s in seeds]
            replies = start_replies(asked.messages, starters)
        except (ValueError, GenerationError) as exc:  # over a limit, refused, or a reply cannot start
            gr.Warning(str(exc))
            yield keep
            return

        def view(status: str, state: RankRound | None, reset: bool = False):
            boxes = [
                gr.update(value=replies[i].display if i < k else "", visible=i < k, label=f"Reply {i + 1}")
                for i in range(MAX_K)
            ]
            picker = {"value": None, "choices": [str(r) for r in range(1, k + 1)]} if reset else {}
            pickers = [gr.update(visible=i < k, interactive=False, **picker) for i in range(MAX_K)]
            return (*boxes, *pickers, state, status, gr.update(interactive=False))

        yield view(f"Sampling {k} replies…", None, reset=True)
        yield from answer_prompt(
            self.store, self.safety, asked, replies, lambda: view(f"Sampling {k} replies…", None)
        )
        ids = [r.message_id for r in replies]
        if None in ids:
            yield view("A reply failed, so this set cannot be ranked. Try again.", None)
            return
        # The pickers open in a follow-up step (open_ranking): Gradio re-sends a generator's last
        # update when it completes, which must not reach ranks the user already picked.
        yield view("All replies are in.", RankRound(ids, user))

    @staticmethod
    def open_ranking(state: RankRound | None):
        if state is None:
            return *[gr.update() for _ in range(MAX_K)], gr.update(), gr.update()
        k = len(state.message_ids)
        return (
            *[gr.update(interactive=i < k) for i in range(MAX_K)],
            gr.update(interactive=True),
            f"Rank the {k} replies: 1 = best, {k} = worst; give two replies the same rank when neither "
            "is better (a tie); then save.",
        )

    def save(self, state: RankRound | None, r1, r2, r3, r4, r5, r6, r7, r8, r9, request: gr.Request):
        ranks = [r1, r2, r3, r4, r5, r6, r7, r8, r9]  # one per slot (Gradio passes inputs positionally)
        if state is None:
            gr.Warning("Sample some replies first.")
            return "Nothing saved."
        if why := self.safety.limit("feedback", request):
            gr.Warning(why)
            return f"Not saved: {why}"
        try:
            order, given = ranking_from_ranks(list(ranks), state.message_ids)
            ranking = self.store.feedback.record_ranking(order, state.user, ranks=given)
        except (ValueError, StoreError) as exc:
            gr.Warning(str(exc))
            return f"Not saved: {exc}"
        ties = " (tied replies give none)" if ranking.tied else ""
        return (
            f"Ranking saved ({ranking.k} replies, {ranking.pairs} preference pairs{ties}). "
            "Change ranks and save again to fix it."
        )

    # -- layout --------------------------------------------------------------------------------------
    def render(self, browser_key: gr.BrowserState) -> None:
        """``browser_key``: the page's shared ``history.browser_key_state()``."""
        state = gr.State(None)
        render_guidance()
        with gr.Row():
            prompt = gr.Textbox(
                placeholder="One prompt, K replies to rank", show_label=False, scale=5, elem_id="rank-input"
            )
            k = gr.Slider(2, MAX_K, value=DEFAULT_K, step=1, label="K replies", scale=1, elem_id="rank-k")
            go = gr.Button("Sample", variant="primary", scale=1, elem_id="rank-go")
        with gr.Accordion("System prompt and sampling", open=False):
            system_prompt = gr.Textbox(
                value=self.settings.server.system_prompt, lines=2, label="System prompt"
            )
            controls = SamplingControls.render(SamplingParams(temperature=0.9))
        status = gr.Markdown("", elem_id="rank-status")
        boxes, pickers = [], []
        for i in range(MAX_K):
            with gr.Row(equal_height=True):
                boxes.append(
                    gr.Textbox(
                        label=f"Reply {i + 1}",
                        lines=3,
                        max_lines=12,
                        interactive=False,
                        visible=False,
                        scale=6,
                        elem_id=f"rank-reply-{i}",
                    )
                )
                pickers.append(
                    gr.Dropdown(
                        choices=[],
                        label="Rank",
                        visible=False,
                        scale=1,
                        min_width=80,
                        elem_id=f"rank-pos-{i}",
                    )
                )
        save = gr.Button("Save ranking", variant="primary", interactive=False, elem_id="rank-save")
        saved = gr.Markdown("", elem_id="rank-saved")

        generate = generate_queue(self.settings.inference.concurrency)
        for trigger in (go.click, prompt.submit):
            trigger(
                self.run,
                [prompt, k, system_prompt, browser_key, *controls.components],
                [*boxes, *pickers, state, status, save],
                **generate,
            ).then(lambda: "", None, saved).then(self.open_ranking, [state], [*pickers, save, status])
        save.click(self.save, [state, *pickers], saved)
