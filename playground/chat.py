"""The Chat tab: streaming chat with stop, retry, undo, edit, new conversation, a system prompt and
sampling controls, and the history sidebar (``playground.history``: past conversations to resume,
rename or delete, and "My data"). Every user message and every reply (with its exact prompt,
parameters, version and timings) is stored the moment it exists, under the owner the sidebar lists
(``access.owner_id``); a stopped reply is stored with what was generated.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from feedback_store.store import FeedbackStore, StoreError
from feedback_store.text import clean_input
from models.base import GenerationError, GenerationResult
from models.service import ModelService
from playground.access import owner_id
from playground.controls import SamplingControls, generate_queue
from playground.history import HistorySidebar
from playground.presets.display import apply_event
from playground.presets.library import PresetLibrary
from playground.presets.panel import PresetPanel
from playground.presets.runner import PresetRun
from playground.replies import MAX_MESSAGE_CHARS, Answerer, Reply, run_round
from playground.safety import Safety
from playground.session import ChatSession, Turn
from settings import Settings

RENDER_INTERVAL_S = 0.05  # at most 20 re-renders a second


def format_stats(result: GenerationResult | None, version_name: str = "") -> str:
    if result is None:
        return ""
    parts = [f"{result.completion_tokens} tokens"]
    if result.ttft_s is not None:
        parts.append(f"first token {result.ttft_s * 1000:.0f} ms")
    if result.tokens_per_s:
        parts.append(f"{result.tokens_per_s:.1f} tok/s")
    parts.append(f"finish: {result.finish_reason}")
    if version_name:
        parts.append(f"version {result.version_id} ({version_name})")
    text = " · ".join(parts)
    for notice in result.notices:
        text += f"\n\n> {notice}"
    return text


class ChatTab(Answerer):
    """Builds the Chat tab and owns its event handlers (no module state: everything hangs off self)."""

    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        service: ModelService,
        presets: PresetLibrary | None = None,
        *,
        safety: Safety,
    ):
        super().__init__(settings, store, service, safety=safety)
        self.presets = PresetPanel(
            presets or PresetLibrary.from_settings(settings),
            settings.server.system_prompt,
            access=self.safety.access,
        )

    # -- handlers ------------------------------------------------------------------------------------
    def submit(
        self,
        text: str,
        session: ChatSession,
        system_prompt: str,
        request: gr.Request,
        browser_key: Any = None,
    ):
        """Store the user's message (``browser_key``: the history sidebar's, so that an anonymous
        user's conversations are theirs after a reload)."""
        text = clean_input(text)
        if not text.strip():
            gr.Warning("Type a message first.")
            return gr.update(), session.chatbot_messages(), session
        if why := self.safety.limit("chat", request):
            gr.Warning(why)  # the text stays in the box
            return gr.update(), session.chatbot_messages(), session
        if len(text) > MAX_MESSAGE_CHARS:
            gr.Warning(
                f"Your message has {len(text):,} characters; only the first {MAX_MESSAGE_CHARS:,} are kept."
            )
            text = text[:MAX_MESSAGE_CHARS]
        if session.conversation_id is not None and not self._still_stored(session.conversation_id):
            gr.Warning("This conversation was deleted (in another tab?): your message starts a new one.")
            session.reset()
        if session.conversation_id is None:
            session.user_id = owner_id(request, browser_key)
            session.conversation_id = self.store.create_conversation(
                session.user_id, source="ui", system_prompt=system_prompt or None
            )
        check = self.safety.check_input(text)
        message_id = self.store.add_message(
            session.conversation_id,
            "user",
            text,
            parent_id=session.last_message_id,
            moderation=check.moderation,
        )
        session.add_user(text, message_id)
        if check.refused:
            self._refuse(session, check, message_id)
        elif check.notice:
            gr.Warning(check.notice)
        return "", session.chatbot_messages(), session

    def _still_stored(self, conversation_id: str) -> bool:
        try:
            self.store.get_conversation(conversation_id)
        except StoreError:
            return False
        return True

    def _refuse(self, session: ChatSession, check, message_id: int) -> None:
        """Answer a blocked message with the refusal (stored too, flagged, so never trained on); the
        exchange stays on screen but is left out of what the model sees next."""
        refusal_id = self.store.add_message(
            session.conversation_id,
            "assistant",
            check.refusal,
            parent_id=message_id,
            moderation=self.safety.refusal_record(check, message_id),
        )
        session.turns[-1].info["moderated"] = True
        session.turns.append(Turn("assistant", check.refusal, refusal_id, info={"moderated": True}))

    def respond(self, session: ChatSession, system_prompt: str, *controls):
        """Stream the reply to the last user message (a generator: Gradio shows each step)."""
        sampling, technique = controls[:7], controls[7:]  # technique: the preset id and examples text
        if not session.awaiting_reply or session.turns[-1].info.get("moderated"):
            yield session.chatbot_messages(), session, gr.update()
            return
        try:
            params = SamplingControls.to_params(*sampling)
        except (ValueError, TypeError) as exc:
            gr.Warning(f"Sampling parameters: {exc}")
            yield session.chatbot_messages(), session, gr.update()
            return
        parent_id = session.last_message_id
        messages = session.model_messages(system_prompt)
        try:
            run = self.presets.start(*technique, messages, params, self.service)
        except (ValueError, GenerationError) as exc:  # PresetError (bad edited examples) is a ValueError
            gr.Warning(str(exc))
            yield session.chatbot_messages(), session, gr.update()
            return
        version_name = self.service.served.name
        turn = Turn("assistant", "", info=self.presets.reply_info(run))
        session.turns.append(turn)
        reply = Reply(run)
        closed = True  # stays True only when Gradio closes this generator (Stop, new conversation)
        try:
            yield from run_round(
                self.store,
                self.safety,
                session.conversation_id,
                parent_id,
                [reply],
                lambda: (session.chatbot_messages(), session, gr.update()),
                # answer chunks, and trace entries shown as collapsible rows
                on_item=lambda _index, event: apply_event(turn, event),
                render_interval_s=RENDER_INTERVAL_S,
                report_hint=True,
            )
            closed = False
        finally:
            # Runs on normal end, on error, and when the Stop button closes this generator; by then
            # the round has stored what was generated.
            stats = self._show_reply(session, turn, run, reply, version_name)
        if not closed:  # the final state (the round renders at most every RENDER_INTERVAL_S)
            if reply.error is not None:
                gr.Warning(f"The model failed: {reply.error}. What was generated so far is kept.")
            yield session.chatbot_messages(), session, stats

    @staticmethod
    def _show_reply(session: ChatSession, turn: Turn, run: PresetRun, reply: Reply, version_name: str) -> str:
        """The finished reply on screen as stored (or, failed, its partial text unstored); the stats."""
        turn.info.update(streaming=False, trace=run.trace)
        turn.info.pop("pending", None)
        if reply.result is None:  # failed: keep the partial text the user saw, unstored and marked
            if not turn.content:
                session.turns.remove(turn)
            return "The reply failed; nothing was stored."
        turn.content = reply.shown or ""
        turn.message_id = reply.message_id
        turn.info.update(version_id=reply.result.version_id, notices=reply.result.notices)
        stats = format_stats(reply.result, version_name)
        if run.preset.technique != "zero_shot":
            stats = f"{run.preset.name}: {run.model_calls} model call(s) · {stats}"
        return stats

    def retry(self, session: ChatSession, data: gr.RetryData, request: gr.Request):
        index = session.turn_index(data.index)
        if index is None:
            gr.Warning("Nothing to retry.")
        elif session.turns[index].info.get("moderated"):
            gr.Warning("The filter refused this message; edit it (the pencil) to send something else.")
        elif why := self.safety.limit("chat", request):
            gr.Warning(why)
        elif not session.cut_for_retry(index):
            gr.Warning("Nothing to retry.")
        return session.chatbot_messages(), session

    def undo(self, session: ChatSession, data: gr.UndoData):
        index = session.turn_index(data.index)
        text = session.undo(index) if index is not None else ""
        return session.chatbot_messages(), session, text

    def edit(self, session: ChatSession, data: gr.EditData, request: gr.Request):
        index = session.turn_index(data.index)
        new_text = clean_input(data.value if isinstance(data.value, str) else _text_of(data.value))
        if index is None or session.turns[index].role != "user" or not new_text.strip():
            gr.Warning("Only your own messages can be edited, and not to empty text.")
            return session.chatbot_messages(), session
        if why := self.safety.limit("chat", request):
            gr.Warning(why)
            return session.chatbot_messages(), session
        new_text = new_text[:MAX_MESSAGE_CHARS]
        check = self.safety.check_input(new_text)
        message_id = self.store.add_message(
            session.conversation_id,
            "user",
            new_text,
            parent_id=session.parent_of(index),
            moderation=check.moderation,
        )
        session.replace_user(index, new_text, message_id)
        if check.refused:
            self._refuse(session, check, message_id)
        elif check.notice:
            gr.Warning(check.notice)
        return session.chatbot_messages(), session

    def new_conversation(self, session: ChatSession):
        session.reset()
        return [], session, "", ""

    def model_info(self) -> str:
        served = self.service.served
        model = served.model
        template = getattr(getattr(model, "template", None), "name", "?")
        text = (
            f"**Model:** {model.display_name} · **version {served.version_id}** ({served.name}) · "
            f"context {model.context_length} tokens · template `{template}`"
        )
        error = getattr(self.service, "last_error", None)
        return text + (f"\n\n> ⚠ {error}" if error else "")

    # -- layout --------------------------------------------------------------------------------------
    def render(self, browser_key: gr.BrowserState | None = None) -> None:
        """``browser_key``: the page's shared ``history.browser_key_state()`` (made by the sidebar if None)."""
        from playground.feedback_ui import FEEDBACK_OPTIONS, FeedbackPanel  # it imports user_id_for

        session = gr.State(ChatSession())
        history = HistorySidebar(
            self.store,
            self.safety,
            self.presets.library,
            runs_dir=self.settings.data_dir / "runs",
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=240, elem_id="history-sidebar"):
                sidebar = history.render(browser_key)
            with gr.Column(scale=3):
                info = gr.Markdown(self.model_info(), elem_id="model-info")
                # versions are hot-swapped under a running page: refresh the line now and then
                gr.Timer(5).tick(self.model_info, None, info, show_progress="hidden")
                chatbot = gr.Chatbot(
                    label="Chat",
                    elem_id="chatbot",
                    height=520,
                    editable="user",
                    feedback_options=FEEDBACK_OPTIONS,
                    buttons=["copy"],
                    placeholder="Ask anything. Replies stream in; every turn is saved for training.",
                )
                with gr.Row():
                    textbox = gr.Textbox(
                        placeholder="Type a message and press Enter",
                        show_label=False,
                        scale=5,
                        elem_id="chat-input",
                        max_length=MAX_MESSAGE_CHARS * 2,
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send-button")
                    stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-button")
                with gr.Row():
                    new = gr.Button("New conversation", size="sm", elem_id="new-conversation")
                stats = gr.Markdown("", elem_id="reply-stats")
            with gr.Column(scale=1):
                self.presets.render()
                system_prompt = gr.Textbox(
                    value=self.settings.server.system_prompt,
                    lines=4,
                    label="System prompt",
                    elem_id="system-prompt",
                )
                with gr.Accordion("Sampling", open=False):
                    controls = SamplingControls.render()

        self.presets.wire(system_prompt, controls.components)
        respond_inputs = [session, system_prompt, *controls.components, *self.presets.components]
        respond_outputs = [chatbot, session, stats]
        generate = generate_queue(self.settings.inference.concurrency)

        events = []
        for trigger in (textbox.submit, send.click):
            ev = trigger(
                self.submit,
                [textbox, session, system_prompt, sidebar.browser_key],
                [textbox, chatbot, session],
                queue=True,
            )
            events.append(ev.then(self.respond, respond_inputs, respond_outputs, **generate))
        events.append(
            chatbot.retry(self.retry, [session], [chatbot, session]).then(
                self.respond, respond_inputs, respond_outputs, **generate
            )
        )
        chatbot.undo(self.undo, [session], [chatbot, session, textbox])
        events.append(
            chatbot.edit(self.edit, [session], [chatbot, session]).then(
                self.respond, respond_inputs, respond_outputs, **generate
            )
        )
        stop.click(None, None, None, cancels=events)
        fresh = [
            new.click(self.new_conversation, [session], [chatbot, session, textbox, stats], cancels=events),
            chatbot.clear(
                self.new_conversation, [session], [chatbot, session, textbox, stats], cancels=events
            ),
        ]
        replaced = history.wire(
            chatbot, session, system_prompt=system_prompt, stats=stats, new_conversation=fresh, replies=events
        )
        self.components = {"chatbot": chatbot, "session": session, "info": info, "stats": stats}
        FeedbackPanel(self.store, self.safety).render(chatbot, session, replies=[*events, *replaced])


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return ""
