"""The Chat tab's history sidebar: the user's own conversations (newest activity first, titled by their
first message or the user's title, with the date and the model version), search, restore, rename,
delete with a confirmation, and "My data" (download everything of mine as JSONL, delete all of it).

Whose history: ``access.owner_id``: the login name, or (without logins) an id made from a random key
this browser keeps in a ``gr.BrowserState`` (localStorage), so the same browser finds its
conversations after a reload. The Chat tab stores its turns under the same owner.

Every handler works out the owner from the request (and the browser key) on the server and passes it
to ``store.conversations``, which looks conversations up by id AND owner: someone else's id answers
as one that does not exist. History actions count against the feedback rate limits. The gr.api
endpoints (``register_api``) give scripts the same calls with the same checks. User text (titles) is
only ever shown in components that render it as text (the list's labels, a textbox), never as Markdown.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from feedback_store.conversations import ConversationNotFound, ConversationSummary, OpenedConversation
from feedback_store.store import FeedbackStore, StoreError
from playground.access import new_browser_key, owner_id, valid_browser_key
from playground.presets.library import PresetLibrary
from playground.safety import Safety, stored_display
from playground.session import ChatSession, branch_count

# Gradio puts the BrowserState secret in the page's config, so it only obfuscates the stored value; it
# and the storage key are fixed so that a restarted server still reads the key a browser kept.
BROWSER_STORAGE_KEY = "rlhf-playground-owner"
BROWSER_SECRET = "rlhf-playground-history"


def browser_key_state() -> gr.BrowserState:
    """The browser's key (``access.owner_id``), kept in its local storage: one per page, given to every
    tab that stores something in the user's name, so that "My data" and "Delete all my data" of an
    anonymous user cover the Chat, Compare and Rank tabs alike. The sidebar's load event fills it."""
    return gr.BrowserState(None, storage_key=BROWSER_STORAGE_KEY, secret=BROWSER_SECRET)


SHOWN = 50  # conversations in the list; search finds older ones
NO_CONVERSATION = "Start or open a conversation first."
WAIT_FOR_REPLY = "Wait for the reply to finish (or press Stop) first."


def label(summary: ConversationSummary) -> str:
    """One line of the list: title · last activity (UTC) · model version."""
    when = summary.updated_at[:16].replace("T", " ")
    version = summary.version_name or (f"version {summary.version_id}" if summary.version_id else "")
    return " · ".join(p for p in (summary.title, when, version) if p)


def _streaming(session: ChatSession) -> bool:
    return any(t.info.get("streaming") for t in session.turns)


@dataclass
class HistoryComponents:
    browser_key: gr.BrowserState
    search: gr.Textbox
    listing: gr.Radio
    count: gr.Markdown
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    delete_confirm: gr.Column
    delete_yes: gr.Button
    delete_no: gr.Button
    download: gr.Button
    file: gr.File
    delete_all: gr.Button
    delete_all_confirm: gr.Column
    delete_all_yes: gr.Button
    delete_all_no: gr.Button


class HistorySidebar:
    """Renders the sidebar and owns its handlers; ``wire`` connects it to the Chat tab's components."""

    def __init__(
        self,
        store: FeedbackStore,
        safety: Safety,
        presets: PresetLibrary,
        *,
        runs_dir: Path | None = None,
    ):
        self.store = store
        self.safety = safety
        self.presets = presets
        self.scrub_dirs = [runs_dir] if runs_dir is not None else []  # training's copies of the datasets

    # -- logic (plain values in and out; the Gradio handlers below wrap it) -------------------------
    def owner(self, request: Any, browser_key: Any) -> str:
        return owner_id(request, browser_key)

    def listing(self, owner: str, search: str = "", selected: str | None = None) -> tuple[Any, str]:
        """The list's update (choices, the open conversation selected if shown) and the count line."""
        found = self.store.conversations.list_for_user(owner, search=search or None, limit=SHOWN)
        total = self.store.conversations.count_for_user(owner)
        choices = [(label(s), s.id) for s in found]
        value = selected if selected in {s.id for s in found} else None
        if search:
            line = f"{len(found)} match(es)" + (f" (the first {SHOWN})" if len(found) == SHOWN else "")
        elif not total:
            line = "_No conversations yet: they appear here as you chat._"
        else:
            line = f"{total} conversation(s)" + (
                f"; the newest {SHOWN} shown, search for older ones" if total > SHOWN else ""
            )
        return gr.update(choices=choices, value=value), line

    def restored(self, owner: str, opened: OpenedConversation) -> ChatSession:
        def preset_info(preset_id: str | None) -> dict[str, Any]:
            preset = self.presets.presets.get(preset_id or "")
            return {} if preset is None else {"preset_name": preset.name, "technique": preset.technique}

        return ChatSession.restore(
            owner,
            opened.summary.id,
            opened.messages,
            shown=lambda m: stored_display(m.content, m.moderation),
            preset_info=preset_info,
        )

    # -- Gradio handlers ------------------------------------------------------------------------------
    def on_load(self, browser_key: Any, request: gr.Request):
        """Page load (and the key arriving from localStorage): make a key for a new browser, show the
        list. Not counted against the rate limits: it is not something the user did."""
        key = valid_browser_key(browser_key)
        fresh = new_browser_key() if key is None else None
        listing, line = self.listing(self.owner(request, key or fresh))
        return (gr.update() if fresh is None else fresh), listing, line

    def refresh(self, search: str, title: str, browser_key: Any, session: ChatSession, request: gr.Request):
        """After a chat turn: the conversation moves to the top, and a new one shows its title (not
        counted against the limits: the turn was)."""
        owner = self.owner(request, browser_key)
        listing, line = self.listing(owner, search, session.conversation_id)
        named = gr.update()
        if session.conversation_id is not None and not (title or "").strip():
            with contextlib.suppress(ConversationNotFound):  # deleted meanwhile (in another tab)
                named = self.store.conversations.summary(session.conversation_id, owner).title
        return listing, line, named

    def search(self, search: str, browser_key: Any, session: ChatSession, request: gr.Request):
        owner = self.owner(request, browser_key)
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return gr.update(), gr.update()
        return self.listing(owner, search, session.conversation_id)

    def open(self, conversation_id: Any, session: ChatSession, browser_key: Any, request: gr.Request):
        """Restore a conversation: chatbot, session, system prompt, stats line, title box."""
        keep = (gr.update(), session, gr.update(), gr.update(), gr.update())
        owner = self.owner(request, browser_key)
        if not conversation_id:
            return keep
        if _streaming(session):
            gr.Warning(WAIT_FOR_REPLY)
            return keep
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return keep
        try:
            opened = self.store.conversations.open(conversation_id, owner)
        except ConversationNotFound as exc:
            gr.Warning(str(exc))
            return keep
        restored = self.restored(owner, opened)
        branches = branch_count(opened.messages)
        line = f"Restored {len(restored.turns)} message(s)" + (
            f"; the latest of {branches} branches is shown, the others are kept" if branches > 1 else ""
        )
        system_prompt = opened.system_prompt or ""
        return restored.chatbot_messages(), restored, system_prompt, line, opened.summary.title

    def rename(self, title: str, search: str, session: ChatSession, browser_key: Any, request: gr.Request):
        owner = self.owner(request, browser_key)
        if session.conversation_id is None:
            gr.Warning(NO_CONVERSATION)
            return gr.update(), gr.update(), gr.update()
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return gr.update(), gr.update(), gr.update()
        try:
            shown = self.store.conversations.rename(session.conversation_id, owner, title)
        except StoreError as exc:  # ConversationNotFound included
            gr.Warning(str(exc))
            return gr.update(), gr.update(), gr.update()
        gr.Info("Renamed.")
        return (shown, *self.listing(owner, search, session.conversation_id))

    def ask_delete(self, session: ChatSession):
        if session.conversation_id is None:
            gr.Warning(NO_CONVERSATION)
            return gr.update(visible=False)
        return gr.update(visible=True)

    @staticmethod
    def hide():
        return gr.update(visible=False)

    def delete(self, search: str, session: ChatSession, browser_key: Any, request: gr.Request):
        """Delete the open conversation; the chat starts afresh. Outputs: chatbot, session, stats,
        title, list, count, confirmation row."""
        owner = self.owner(request, browser_key)
        unchanged = (gr.update(), session, gr.update(), gr.update(), gr.update(), gr.update())
        if session.conversation_id is None:
            gr.Warning(NO_CONVERSATION)
            return (*unchanged, gr.update(visible=False))
        if _streaming(session):
            gr.Warning(WAIT_FOR_REPLY)
            return (*unchanged, gr.update(visible=False))
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return (*unchanged, gr.update(visible=False))
        try:
            done = self.store.conversations.delete(session.conversation_id, owner, scrub_dirs=self.scrub_dirs)
        except ConversationNotFound as exc:
            gr.Warning(str(exc))
            return (*unchanged, gr.update(visible=False))
        session.reset()
        gr.Info(f"Deleted: {done.describe()}. None of it is used for training any more.")
        return ([], session, "", "", *self.listing(owner, search), gr.update(visible=False))

    def delete_all(self, session: ChatSession, browser_key: Any, request: gr.Request):
        """Delete everything of this user. Outputs as ``delete``."""
        owner = self.owner(request, browser_key)
        if _streaming(session):
            gr.Warning(WAIT_FOR_REPLY)
            return (gr.update(), session, *[gr.update()] * 4, gr.update(visible=False))
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return (gr.update(), session, *[gr.update()] * 4, gr.update(visible=False))
        done = self.store.conversations.delete_user_data(owner, scrub_dirs=self.scrub_dirs)
        session.reset()
        gr.Info(f"Deleted all your data: {done.describe()}.")
        return ([], session, "", "", *self.listing(owner, ""), gr.update(visible=False))

    def download(self, browser_key: Any, request: gr.Request):
        """This user's conversations and feedback as a JSONL file (nobody else's). Outputs: the file,
        and its path for ``forget_download``."""
        owner = self.owner(request, browser_key)
        if why := self.safety.limit("feedback", request, user=owner):
            gr.Warning(why)
            return gr.update(), None
        out = Path(tempfile.mkdtemp(prefix="playground-my-data-")) / "my_data.jsonl"
        n = self.store.conversations.export_user(owner, out)
        gr.Info(f"Your data: {n} line(s).")
        return gr.update(value=str(out), visible=True), str(out)

    @staticmethod
    def forget_download(path: str | None) -> None:
        """Remove our copy once Gradio has served its own (its cache is cleared hourly, see app.py):
        a user's words should not outlive a later "delete all my data" in a temporary directory."""
        if path:
            shutil.rmtree(Path(path).parent, ignore_errors=True)

    @staticmethod
    def after_new():
        """New conversation: nothing selected, no title."""
        return gr.update(value=None), ""

    # -- layout ----------------------------------------------------------------------------------
    def render(self, browser_key: gr.BrowserState | None = None) -> HistoryComponents:
        """The sidebar's components (call inside the Chat tab's left column). ``browser_key``: the page's
        one ``browser_key_state()``, shared with the Compare and Rank tabs (made here if not given)."""
        browser_key = browser_key if browser_key is not None else browser_key_state()
        gr.Markdown("### Your conversations")
        search = gr.Textbox(
            placeholder="Search (Enter)", show_label=False, elem_id="history-search", max_length=200
        )
        listing = gr.Radio(choices=[], show_label=False, elem_id="history-list", container=False)
        count = gr.Markdown("", elem_id="history-count")
        with gr.Group():
            title = gr.Textbox(
                label="This conversation",
                placeholder="Title (the first message until you rename it)",
                elem_id="history-title",
                max_length=400,
            )
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="history-rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="history-delete")
        with gr.Column(visible=False, elem_id="history-delete-confirm") as delete_confirm:
            gr.Markdown(
                "**Delete this conversation?** Its messages and all feedback on them are removed, also "
                "from training data and exports. This cannot be undone."
            )
            with gr.Row():
                delete_yes = gr.Button("Yes, delete", size="sm", variant="stop", elem_id="history-delete-yes")
                delete_no = gr.Button("No", size="sm", elem_id="history-delete-no")
        with gr.Accordion("My data", open=False, elem_id="my-data"):
            gr.Markdown(
                "Everything you wrote here and every rating you gave, as JSONL (only yours). "
                "Deleting removes it from the database and from the next training data."
            )
            download = gr.Button("Download my data", size="sm", elem_id="my-data-download")
            file = gr.File(label="my_data.jsonl", visible=False, interactive=False, elem_id="my-data-file")
            delete_all = gr.Button("Delete all my data", size="sm", variant="stop", elem_id="my-data-delete")
            with gr.Column(visible=False, elem_id="my-data-delete-confirm") as delete_all_confirm:
                gr.Markdown("**Delete all your conversations and feedback?** This cannot be undone.")
                with gr.Row():
                    delete_all_yes = gr.Button(
                        "Yes, delete everything", size="sm", variant="stop", elem_id="my-data-delete-yes"
                    )
                    delete_all_no = gr.Button("No", size="sm", elem_id="my-data-delete-no")
        self.parts = HistoryComponents(
            browser_key,
            search,
            listing,
            count,
            title,
            rename,
            delete,
            delete_confirm,
            delete_yes,
            delete_no,
            download,
            file,
            delete_all,
            delete_all_confirm,
            delete_all_yes,
            delete_all_no,
        )
        return self.parts

    def wire(
        self,
        chatbot: gr.Chatbot,
        session: gr.State,
        *,
        system_prompt: gr.Textbox,
        stats: gr.Markdown,
        new_conversation: list[Any],
        replies: list[Any],
    ) -> list[Any]:
        """Connect the sidebar to the chat. ``new_conversation``: the events that start a fresh chat;
        ``replies``: the chat's reply events (the list follows them; restoring and deleting stop
        them). Returns the events that replace the chat (restore, delete), for the feedback panel."""
        p = self.parts
        private = {"api_visibility": "private"}  # scripts use register_api's endpoints instead
        list_out = [p.listing, p.count]
        # On load and when the key arrives from localStorage (its change event); a new browser gets a key.
        gr.on(
            None,
            self.on_load,
            [p.browser_key],
            [p.browser_key, *list_out],
            show_progress="hidden",
            **private,
        )
        for event in replies:
            event.then(
                self.refresh,
                [p.search, p.title, p.browser_key, session],
                [*list_out, p.title],
                show_progress="hidden",
                **private,
            )
        for event in new_conversation:
            event.then(self.after_new, None, [p.listing, p.title], show_progress="hidden", **private)
        p.search.submit(self.search, [p.search, p.browser_key, session], list_out, **private)
        restore = p.listing.input(
            self.open,
            [p.listing, session, p.browser_key],
            [chatbot, session, system_prompt, stats, p.title],
            cancels=replies,
            **private,
        )
        p.rename.click(
            self.rename, [p.title, p.search, session, p.browser_key], [p.title, *list_out], **private
        )
        p.title.submit(
            self.rename, [p.title, p.search, session, p.browser_key], [p.title, *list_out], **private
        )
        p.delete.click(self.ask_delete, [session], p.delete_confirm, **private)
        p.delete_no.click(self.hide, None, p.delete_confirm, **private)
        chat_out = [chatbot, session, stats, p.title, *list_out]
        deleted = p.delete_yes.click(
            self.delete, [p.search, session, p.browser_key], [*chat_out, p.delete_confirm], **private
        )
        p.delete_all.click(lambda: gr.update(visible=True), None, p.delete_all_confirm, **private)
        p.delete_all_no.click(self.hide, None, p.delete_all_confirm, **private)
        deleted_all = p.delete_all_yes.click(
            self.delete_all, [session, p.browser_key], [*chat_out, p.delete_all_confirm], **private
        )
        exported = gr.State(None)
        p.download.click(self.download, [p.browser_key], [p.file, exported], **private).then(
            self.forget_download, [exported], None, **private
        )
        return [restore, deleted, deleted_all]


def register_api(store: FeedbackStore, safety: Safety, *, runs_dir: Path | None = None) -> None:
    """``gr.api`` endpoints (inside a Blocks context) for scripts: list, open, rename and delete your
    own conversations. The owner is the login name; without logins, pass the browser key a page keeps
    (``browser_key``), or the calls see this client's session only. Another user's conversation id
    answers exactly as an unknown one. Each call counts against the feedback rate limits."""

    def who(request: gr.Request, browser_key: str | None) -> str:
        owner = owner_id(request, browser_key)
        if why := safety.limit("feedback", request, user=owner):
            raise gr.Error(why)
        return owner

    def history_list(search: str = "", browser_key: str | None = None, request: gr.Request = None) -> list:
        """Your conversations, newest activity first (at most 50; ``search`` matches titles and text)."""
        owner = who(request, browser_key)
        return [
            {
                "id": s.id,
                "title": s.title,
                "updated_at": s.updated_at,
                "messages": s.messages,
                "version_id": s.version_id,
                "version": s.version_name,
            }
            for s in store.conversations.list_for_user(owner, search=search or None, limit=SHOWN)
        ]

    def history_open(
        conversation_id: str, browser_key: str | None = None, request: gr.Request = None
    ) -> dict:
        """One of your conversations with every message (all branches; ``parent_id`` links them)."""
        owner = who(request, browser_key)
        try:
            opened = store.conversations.open(conversation_id, owner)
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return {
            "id": opened.summary.id,
            "title": opened.summary.title,
            "system_prompt": opened.system_prompt,
            "messages": [
                {
                    "id": m.id,
                    "parent_id": m.parent_id,
                    "role": m.role,
                    "content": stored_display(m.content, m.moderation)
                    if m.role == "assistant"
                    else m.content,
                    "created_at": m.created_at,
                    "model_version_id": m.model_version_id,
                }
                for m in opened.messages
            ],
        }

    def history_rename(
        conversation_id: str, title: str, browser_key: str | None = None, request: gr.Request = None
    ) -> dict:
        """Rename one of your conversations (an empty title: its first message again)."""
        owner = who(request, browser_key)
        try:
            shown = store.conversations.rename(conversation_id, owner, title)
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return {"id": conversation_id, "title": shown}

    def history_delete(
        conversation_id: str, browser_key: str | None = None, request: gr.Request = None
    ) -> dict:
        """Delete one of your conversations with the feedback on it (also out of training)."""
        owner = who(request, browser_key)
        try:
            done = store.conversations.delete(
                conversation_id, owner, scrub_dirs=[runs_dir] if runs_dir is not None else []
            )
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return {"deleted": done.conversations, "messages": done.messages}

    for fn in (history_list, history_open, history_rename, history_delete):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
