"""Feedback on chat replies, in the Chat tab: quick thumbs and reasons under each reply (the Chatbot's
like event), and a "Rate this reply" panel with reasons, the 1-7 score, the InstructGPT flags, a note
and "write a better answer". Also the labeler guidance shown in every rating tab, and ``gr.api``
endpoints so scripts (gradio_client cannot send like events) can give the same feedback.

Which reply the panel rates: the one last rated or clicked, else the newest reply; its first words are
shown at the top of the panel. Who rates: the owner of the chat session (``rater_id``: the login name,
or the browser's anonymous id the history sidebar uses), so "My data" finds the ratings too.
Everything is written through ``feedback_store.feedback`` (upserts, so Gradio's double-fired like
events and repeated saves never add rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from feedback_store import feedback as fb
from feedback_store import hygiene as store_safety
from feedback_store.store import FeedbackStore, StoreError
from playground.access import user_id_for
from playground.controls import in_field_order
from playground.safety import Safety
from playground.session import ChatSession

log = logging.getLogger(__name__)

GUIDANCE_MD = """\
**Judge each reply as a careful reviewer would** (the criteria InstructGPT's labelers used):

- **Helpful**: does what was asked, in the form asked, at a sensible length; asks when the request is unclear.
- **Truthful**: no invented facts; says so when it does not know.
- **Harmless**: no dangerous, abusive or demeaning content; refuses only what deserves refusing.

When they conflict, **truthful and harmless usually outweigh helpful**: a correct refusal beats a
confident wrong answer. Score 1 = terrible, 4 = acceptable, 7 = as good as it gets. Your better
answer becomes a training example: write what you wish the model had said.
"""

# The chatbot's own options: the two thumbs, then quick reasons for a bad reply under the flag icon.
QUICK_REASONS = ("incorrect", "not_helpful", "too_long", "ignored_instructions", "refused", "unsafe")
# Reports on the content filter, in the same flag menu: stored as moderation reports, not as feedback.
REPORT_OPTIONS = {"The filter was wrong": "false_positive", "This should have been blocked": "false_negative"}
FEEDBACK_OPTIONS = ("Like", "Dislike", *(fb.DOWN_REASONS[k] for k in QUICK_REASONS), *REPORT_OPTIONS)
_REASON_BY_LABEL = {fb.DOWN_REASONS[k]: k for k in QUICK_REASONS}
THUMBS_CHOICES = [("Good", "up"), ("Bad", "down")]
SCORE_CHOICES = [(str(i), i) for i in range(1, 8)]
WAIT_FOR_REPLY = "Wait for the reply to finish, then rate it."


def rater_id(session: ChatSession, request: Any) -> str:
    """The login name, else the chat session's owner (set from the browser's key when the conversation
    was started or restored), else the per-session anonymous id."""
    if request is not None and getattr(request, "username", None):
        return str(request.username)
    return session.user_id or user_id_for(request)


def render_guidance(open_: bool = False) -> gr.Accordion:
    with gr.Accordion("How to judge a reply", open=open_, elem_classes=["labeler-guidance"]) as acc:
        gr.Markdown(GUIDANCE_MD)
    return acc


def thumbs_value(liked: Any) -> tuple[int | None, list[str]]:
    """Chatbot LikeData.liked -> (thumbs, quick reasons to add). "" means the rating was taken back."""
    if liked is True:
        return 1, []
    if liked is False:
        return -1, []
    if isinstance(liked, str) and liked in _REASON_BY_LABEL:
        return -1, [_REASON_BY_LABEL[liked]]
    return None, []


def _preview(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class PanelFields:
    header: gr.Markdown
    thumbs: gr.Radio
    reasons_down: gr.CheckboxGroup
    reasons_up: gr.CheckboxGroup
    score: gr.Radio
    flags: gr.CheckboxGroup
    note: gr.Textbox
    better: gr.Textbox

    @property
    def all(self) -> list[gr.components.Component]:
        return in_field_order(self)


class FeedbackPanel:
    """The Chat tab's feedback: like handler, panel, save. State lives in the session and a gr.State."""

    def __init__(self, store: FeedbackStore, safety: Safety):
        self.store = store
        self.safety = safety

    # -- which reply -------------------------------------------------------------------------------
    @staticmethod
    def _reply_at(session: ChatSession, chatbot_index: Any) -> tuple[int | None, str | None]:
        """(message id, why not) of the assistant turn shown at ``chatbot_index``."""
        index = session.turn_index(chatbot_index)
        if index is None or session.turns[index].role != "assistant":
            return None, "Only replies can be rated."
        turn = session.turns[index]
        if turn.message_id is None:
            return None, WAIT_FOR_REPLY
        return turn.message_id, None

    @staticmethod
    def _target(session: ChatSession, target: int | None) -> int | None:
        """The chosen reply if it is still on screen, else the newest stored reply."""
        stored = [t.message_id for t in session.turns if t.role == "assistant" and t.message_id is not None]
        if target in stored:
            return target
        return stored[-1] if stored else None

    def _fields_for(self, message_id: int | None, user_id: str) -> list[Any]:
        if message_id is None:
            header = "_No reply to rate yet: chat first._"
            return [header, None, [], [], None, [], "", ""]
        reply = self.store.get_message(message_id)
        action = (reply.moderation or {}).get("action")
        shown = {"withheld": "(a reply the filter withheld)", "refusal": "(the filter's refusal)"}
        header = f"Rating the reply: “{shown.get(action) or _preview(reply.content)}”"
        got = self.store.feedback.get_feedback(message_id, user_id)
        demo = self.store.feedback.get_demonstration(message_id, user_id)
        thumbs = None if got is None or got.thumbs is None else ("up" if got.thumbs == 1 else "down")
        reasons = list(got.reasons) if got else []
        return [
            header,
            thumbs,
            gr.update(value=reasons if thumbs == "down" else [], visible=thumbs == "down"),
            gr.update(value=reasons if thumbs == "up" else [], visible=thumbs == "up"),
            got.score if got else None,
            list(got.flags) if got else [],
            (got.note or "") if got else "",
            demo.content if demo else "",
        ]

    # -- handlers ------------------------------------------------------------------------------------
    def on_like(self, session: ChatSession, target: int | None, data: gr.LikeData, request: gr.Request):
        message_id, why = self._reply_at(session, data.index)
        if message_id is None:
            gr.Warning(why)
            return [target, *[gr.update() for _ in range(8)]]
        if why := self.safety.limit("feedback", request):
            gr.Warning(why)
            return [target, *[gr.update() for _ in range(8)]]
        user = rater_id(session, request)
        if data.liked in REPORT_OPTIONS:
            self.report(message_id, REPORT_OPTIONS[data.liked], user)
            return [target, *[gr.update() for _ in range(8)]]
        thumbs, reasons = thumbs_value(data.liked)
        try:
            self.store.feedback.record_feedback(message_id, user, thumbs=thumbs, add_reasons=reasons)
        except StoreError as exc:
            gr.Warning(str(exc))
        return [message_id, *self._fields_for(message_id, user)]

    def report(self, message_id: int, kind: str, user: str) -> None:
        """A report on the filter. A refusal is reported on the message it refused."""
        message = self.store.get_message(message_id)
        moderation = message.moderation or {}
        if moderation.get("action") == "refusal" and moderation.get("refused_message_id"):
            message_id = int(moderation["refused_message_id"])
        try:
            self.store.hygiene.record_report(message_id, user, kind)
        except StoreError as exc:
            gr.Warning(str(exc))
            return
        then = {
            "false_negative": "It is out of training from now on, and an admin will review the filter.",
            "false_positive": "An admin will review it; once confirmed, it is used for training again.",
        }[kind]
        gr.Info(f"Thanks: reported that {store_safety.REPORT_TEXT[kind]}. {then}")

    def on_select(self, session: ChatSession, data: gr.SelectData, request: gr.Request):
        message_id, _why = self._reply_at(session, data.index)
        target = message_id if message_id is not None else self._target(session, None)
        return [target, *self._fields_for(target, rater_id(session, request))]

    def follow_newest(self, session: ChatSession, request: gr.Request):
        """After a new reply (or a new conversation) the panel rates the newest reply."""
        target = self._target(session, None)
        return [target, *self._fields_for(target, rater_id(session, request)), ""]

    @staticmethod
    def on_thumbs(thumbs: str | None):
        return gr.update(visible=thumbs == "down"), gr.update(visible=thumbs == "up")

    def save(
        self,
        session: ChatSession,
        target: int | None,
        thumbs: str | None,
        reasons_down: list[str],
        reasons_up: list[str],
        score: int | None,
        flags: list[str],
        note: str,
        better: str,
        request: gr.Request,
    ):
        message_id = self._target(session, target)
        if message_id is None:
            gr.Warning("There is no finished reply to rate yet.")
            return target, "Nothing saved: no reply yet."
        if why := self.safety.limit("feedback", request):
            gr.Warning(why)
            return target, f"Not saved: {why}"
        user = rater_id(session, request)
        value = {"up": 1, "down": -1}.get(thumbs or "")
        reasons = (reasons_down if value == -1 else reasons_up if value == 1 else []) or []
        try:
            with self.store.write():  # one transaction: a refused better answer saves nothing
                saved = self.store.feedback.record_feedback(
                    message_id,
                    user,
                    thumbs=value,
                    reasons=reasons,
                    score=int(score) if score not in (None, "") else None,
                    flags=flags or [],
                    note=note or None,
                )
                better = (better or "").strip()
                demo = self.store.feedback.add_demonstration(message_id, user, better) if better else None
                if demo is not None and (decision := self.safety.check_demonstration(demo.content)):
                    self.store.hygiene.set_demonstration_moderation(demo.id, decision)
        except StoreError as exc:
            gr.Warning(str(exc))
            return message_id, f"Not saved: {exc}"
        parts = []
        if saved.thumbs is not None:
            parts.append("👍" if saved.thumbs == 1 else "👎")
        if saved.reasons:
            parts.append(", ".join(saved.reasons).replace("_", " "))
        if saved.score is not None:
            parts.append(f"score {saved.score}/7")
        if saved.flags:
            parts.append(f"{len(saved.flags)} flag(s)")
        if saved.note:
            parts.append("note")
        if demo is not None:
            parts.append("better answer")
        return message_id, "Saved: " + (" · ".join(parts) if parts else "(nothing given)")

    # -- layout --------------------------------------------------------------------------------------
    def render(self, chatbot: gr.Chatbot, session: gr.State, replies: list[Any]) -> None:
        """The panel under the chat. ``replies`` are the chat's generating events: when one ends, the
        panel moves on to the newest reply."""
        target = gr.State(None)
        with gr.Accordion("Rate this reply", open=False, elem_id="feedback-panel"):
            render_guidance()
            fields = PanelFields(
                header=gr.Markdown("_No reply to rate yet: chat first._", elem_id="feedback-target"),
                thumbs=gr.Radio(THUMBS_CHOICES, label="Overall", elem_id="feedback-thumbs"),
                reasons_down=gr.CheckboxGroup(
                    [(label, key) for key, label in fb.DOWN_REASONS.items()],
                    label="What was wrong?",
                    visible=False,
                    elem_id="feedback-reasons-down",
                ),
                reasons_up=gr.CheckboxGroup(
                    [(label, key) for key, label in fb.UP_REASONS.items()],
                    label="What was good?",
                    visible=False,
                    elem_id="feedback-reasons-up",
                ),
                score=gr.Radio(
                    SCORE_CHOICES,
                    label="Score: 1 = terrible, 4 = acceptable, 7 = excellent",
                    elem_id="feedback-score",
                ),
                flags=gr.CheckboxGroup(
                    [(label, key) for key, label in fb.INSTRUCTGPT_FLAGS.items()],
                    label="Flags",
                    elem_id="feedback-flags",
                ),
                note=gr.Textbox(label="Note (optional)", lines=2, elem_id="feedback-note"),
                better=gr.Textbox(
                    label="Write a better answer (optional): it is saved as an example to learn from",
                    lines=4,
                    elem_id="feedback-better",
                ),
            )
            save = gr.Button("Save feedback", variant="primary", elem_id="feedback-save")
            status = gr.Markdown("", elem_id="feedback-status")

        fields.thumbs.change(self.on_thumbs, [fields.thumbs], [fields.reasons_down, fields.reasons_up])
        chatbot.like(self.on_like, [session, target], [target, *fields.all])
        chatbot.select(self.on_select, [session], [target, *fields.all])
        for event in replies:
            event.then(self.follow_newest, [session], [target, *fields.all, status])
        save.click(
            self.save,
            [
                session,
                target,
                fields.thumbs,
                fields.reasons_down,
                fields.reasons_up,
                fields.score,
                fields.flags,
                fields.note,
                fields.better,
            ],
            [target, status],
        )


def register_api(store: FeedbackStore, safety: Safety) -> None:
    """``gr.api`` endpoints (inside a Blocks context) for scripts and gradio_client, which cannot send
    like events. The user is the login name or the client's anonymous session, as in the UI. They count
    against the feedback rate limits."""

    def limit(request: gr.Request) -> None:
        if why := safety.limit("feedback", request):
            raise gr.Error(why)

    def rate_reply(
        message_id: int,
        thumbs: int | None = None,
        reasons: list[str] | None = None,
        score: int | None = None,
        flags: list[str] | None = None,
        note: str | None = None,
        request: gr.Request = None,
    ) -> dict:
        """Thumbs (1 / -1), reasons, a 1-7 score, InstructGPT flags and a note on a stored reply."""
        limit(request)
        kwargs: dict[str, Any] = {"thumbs": thumbs, "reasons": reasons or []}
        if score is not None:
            kwargs["score"] = score
        if flags is not None:
            kwargs["flags"] = flags
        if note is not None:
            kwargs["note"] = note
        try:
            saved = store.feedback.record_feedback(int(message_id), user_id_for(request), **kwargs)
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return {"id": saved.id, "message_id": saved.message_id, "user_id": saved.user_id}

    def better_answer(message_id: int, answer: str, request: gr.Request = None) -> dict:
        """Store your own better answer to a stored reply (a demonstration and a preference pair)."""
        limit(request)
        try:
            with store.write():
                saved = store.feedback.add_demonstration(int(message_id), user_id_for(request), answer)
                if decision := safety.check_demonstration(saved.content):
                    store.hygiene.set_demonstration_moderation(saved.id, decision)
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return {"id": saved.id, "message_id": saved.message_id, "user_id": saved.user_id}

    def report_moderation(
        message_id: int, kind: str, note: str | None = None, request: gr.Request = None
    ) -> dict:
        """Tell the content filter it was wrong about a stored message: kind "false_positive" (it was
        blocked or flagged but is fine) or "false_negative" (it should have been blocked)."""
        limit(request)
        try:
            saved = store.hygiene.record_report(int(message_id), user_id_for(request), kind, note=note)
        except (StoreError, ValueError, TypeError) as exc:
            raise gr.Error(str(exc)) from exc
        return {"id": saved.id, "message_id": saved.message_id, "kind": saved.kind}

    gr.api(rate_reply, api_name="rate_reply", concurrency_limit=None)
    gr.api(better_answer, api_name="better_answer", concurrency_limit=None)
    gr.api(report_moderation, api_name="report_moderation", concurrency_limit=None)
