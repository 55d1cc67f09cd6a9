"""The history sidebar's logic without a browser: who owns a request (login, browser key), restoring a
conversation with its branches and continuing it, rename, delete, delete all, "my data", the rate
limit, and forged or foreign ids answered as unknown ones in every handler. Requests are
``gr.Request`` objects as Gradio builds them for queued events; the Chat tab stores turns without a
model (``submit`` needs none)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from gradio import LikeData

from feedback_store.conversations import ConversationNotFound
from feedback_store.store import AssistantTurn, FeedbackStore
from playground.access import new_browser_key, owner_id, user_id_for
from playground.chat import ChatTab
from playground.feedback_ui import FeedbackPanel
from playground.history import HistorySidebar, label
from playground.presets.library import PresetLibrary
from playground.safety import Safety, stored_display
from playground.session import ChatSession, branch_count, latest_branch
from settings import Settings

NOT_FOUND = str(ConversationNotFound())
pytestmark = pytest.mark.filterwarnings("ignore:Renamed|Deleted|Your data:UserWarning")


def request(user=None, session="s" * 16, host="203.0.113.7"):
    return gr.Request(username=user, session_hash=session, client={"host": host, "port": 1})


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path, rate_limit_chat="off", rate_limit_feedback="100/minute")


@pytest.fixture
def parts(store, settings):
    safety = Safety.from_settings(settings, store)
    chat = ChatTab(settings, store, None, safety=safety)
    history = HistorySidebar(
        store, safety, PresetLibrary.from_settings(settings), runs_dir=settings.data_dir / "runs"
    )
    return chat, history


def answer(store: FeedbackStore, session: ChatSession, text: str, **extra) -> int:
    """A stored reply to the session's last message, as the Chat tab stores one."""
    version = store.versions.ensure_base("m.gguf", name="base").id
    message_id = store.add_assistant_message(
        session.conversation_id,
        session.last_message_id,
        AssistantTurn(content=text, model_version_id=version, **extra),
    )
    session.turns.append(type(session.turns[0])("assistant", text, message_id))
    return message_id


def test_owner_is_the_login_else_a_hash_of_the_browser_key_else_the_session():
    key = new_browser_key()
    assert owner_id(request(user="alice"), key) == "alice"  # a login always wins
    anon = owner_id(request(session="a" * 16), key)
    assert anon.startswith("anon-") and key not in anon  # the key itself is never stored
    assert owner_id(request(session="b" * 16), key) == anon  # a reload (new session): the same owner
    assert owner_id(request(), new_browser_key()) != anon
    for bad in (None, "", "not-a-key", key.upper(), 12345, {"k": key}):
        assert owner_id(request(), bad) == user_id_for(request())


def test_restore_shows_the_latest_branch_keeps_the_others_and_continues_from_its_end(store, parts):
    chat, history = parts
    key = new_browser_key()
    req = request()
    session = ChatSession()
    chat.submit("Capital of France?", session, "Be brief.", req, key)
    first = answer(store, session, "Lyon.")
    session.cut_for_retry(1)  # retry: a sibling reply
    retry = answer(store, session, "Paris.")
    chat.submit("And of Italy?", session, "Be brief.", req, key)
    answer(store, session, "Rome.")
    edit_at = 2  # edit the second question: a sibling user message and its reply
    edited_id = store.add_message(session.conversation_id, "user", "And of Spain?", parent_id=retry)
    session.replace_user(edit_at, "And of Spain?", edited_id)
    latest = answer(store, session, "Madrid.")
    owner = owner_id(req, key)

    # a reload: a fresh session and session hash, the same browser key
    fresh = ChatSession()
    _key, listing, line = history.on_load(key, request(session="r" * 16))
    assert listing["choices"][0][1] == session.conversation_id and "1 conversation" in line
    shown, restored, system_prompt, stats, title = history.open(
        session.conversation_id, fresh, key, request(session="r" * 16)
    )
    assert [m["content"] for m in shown] == ["Capital of France?", "Paris.", "And of Spain?", "Madrid."]
    assert restored.user_id == owner and restored.last_message_id == latest
    assert system_prompt == "Be brief." and title == "Capital of France?"
    assert "latest of 3 branches" in stats
    stored = store.conversation_messages(session.conversation_id)
    assert {first, retry, latest} <= {m.id for m in stored} and branch_count(stored) == 3
    assert [m.id for m in latest_branch(stored)] == [t.message_id for t in restored.turns]

    # the next message continues the restored branch
    chat.submit("And of Portugal?", restored, "Be brief.", request(session="r" * 16), key)
    new = store.get_message(restored.last_message_id)
    assert new.parent_id == latest and new.conversation_id == session.conversation_id
    assert [m["content"] for m in restored.model_messages("Be brief.")][-3:] == [
        "And of Spain?",
        "Madrid.",
        "And of Portugal?",
    ]
    assert len(store.conversations.list_for_user(owner)) == 1  # still one conversation


def test_restore_keeps_withheld_replies_withheld_and_refusals_out_of_the_model(store, parts):
    chat, history = parts
    conv = store.create_conversation("alice")
    u = store.add_message(conv, "user", "bad words", moderation={"flagged": True, "action": "refused"})
    refusal = {"flagged": True, "action": "refusal", "refused_message_id": u}
    store.add_message(conv, "assistant", "⚠️ Not sent.", parent_id=u, moderation=refusal)
    u2 = store.add_message(conv, "user", "ok question", parent_id=u + 1)
    withheld = {"flagged": True, "action": "withheld", "categories": ["violence"]}
    store.add_assistant_message(
        conv, u2, AssistantTurn(content="SECRET-WITHHELD", model_version_id=None, moderation=withheld)
    )
    shown, restored, *_ = history.open(conv, ChatSession(), None, request(user="alice"))
    assert "SECRET-WITHHELD" not in json.dumps(shown) and "withheld" in shown[-1]["content"]
    assert stored_display("text", withheld) == shown[-1]["content"]
    assert [m["content"] for m in restored.model_messages(None)] == ["ok question", shown[-1]["content"]]


def test_a_preset_reply_comes_back_with_its_trace(store, parts):
    _chat, history = parts
    conv = store.create_conversation("alice")
    u = store.add_message(conv, "user", "2+2?")
    trace = [{"type": "thought", "title": "Thinking", "text": "add them"}]
    store.add_assistant_message(
        conv, u, AssistantTurn(content="4", model_version_id=None, preset_id="react", trace=trace)
    )
    shown, restored, *_ = history.open(conv, ChatSession(), None, request(user="alice"))
    assert any("Trace" in (m.get("metadata") or {}).get("title", "") for m in shown)
    assert restored.turns[-1].info["technique"] == "react" and shown[-1]["content"] == "4"


def test_forged_and_foreign_ids_answer_as_unknown_ones_in_every_handler(store, parts):
    chat, history = parts
    alice = ChatSession()
    chat.submit("alice's secret", alice, "", request(user="alice"), None)
    answer(store, alice, "noted")
    bob_req = request(user="bob", session="b" * 16)
    bob = ChatSession()
    for forged in (alice.conversation_id, "0" * 32, "'; DELETE FROM messages; --"):
        with pytest.warns(UserWarning, match=NOT_FOUND):
            out = history.open(forged, bob, None, bob_req)
        assert out[1] is bob and bob.turns == []
    # a session that somehow names alice's conversation still acts as bob
    stolen = ChatSession(user_id="bob", conversation_id=alice.conversation_id)
    with pytest.warns(UserWarning, match=NOT_FOUND):
        history.rename("mine", "", stolen, None, bob_req)
    with pytest.warns(UserWarning, match=NOT_FOUND):
        history.delete("", stolen, None, bob_req)
    _k, listing, _line = history.on_load(None, bob_req)
    assert listing["choices"] == []
    anon = request(session="c" * 16)  # an anonymous browser with its own key
    with pytest.warns(UserWarning, match=NOT_FOUND):
        history.open(alice.conversation_id, ChatSession(), new_browser_key(), anon)
    assert store.conversations.list_for_user("alice")[0].title == "alice's secret"
    assert store.count("messages") == 2


def test_rename_delete_and_a_new_browser_key(store, parts):
    chat, history = parts
    key_update, listing, line = history.on_load(None, request())
    assert isinstance(key_update, str) and len(key_update) == 32  # a new browser gets a key
    assert listing["choices"] == [] and "No conversations yet" in line
    key = key_update
    assert history.on_load(key, request())[0] == gr.update()  # a known key is kept as it is
    session = ChatSession()
    chat.submit("Title me", session, "", request(), key)
    answer(store, session, "ok")
    title, listing, _ = history.rename("  My   chat ", "", session, key, request())
    assert title == "My chat" and listing["choices"][0][0].startswith("My chat · ")
    assert history.ask_delete(session)["visible"] is True
    conv = session.conversation_id
    shown, session, stats, title, listing, line, confirm = history.delete("", session, key, request())
    assert shown == [] and session.conversation_id is None and confirm["visible"] is False
    assert listing["choices"] == [] and store.count("conversations") == 0
    with pytest.raises(ConversationNotFound):
        store.conversations.open(conv, owner_id(request(), key))
    with pytest.warns(UserWarning, match="Start or open"):
        history.rename("x", "", session, key, request())


def test_my_data_download_and_delete_all_are_the_users_own(store, parts):
    chat, history = parts
    panel = FeedbackPanel(store, history.safety)
    key = new_browser_key()
    mine = ChatSession()
    chat.submit("my question", mine, "", request(), key)
    reply = answer(store, mine, "my answer")
    mine.chatbot_messages()
    panel.on_like(mine, None, LikeData(None, {"index": 1, "value": "x", "liked": True}), request())
    theirs = ChatSession()
    chat.submit("their question", theirs, "", request(session="t" * 16), new_browser_key())
    answer(store, theirs, "their answer")

    update, path = history.download(key, request(session="z" * 16))
    path = Path(path)
    assert update["value"] == str(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in rows] == ["conversation", "feedback"]  # the like was stored as mine
    assert rows[1]["message_id"] == reply and "their" not in path.read_text()
    history.forget_download(str(path))  # once Gradio has its copy, ours goes
    assert not path.parent.exists()

    out = history.delete_all(mine, key, request())
    assert out[0] == [] and out[1].conversation_id is None
    assert store.conversations.list_for_user(owner_id(request(), key)) == []
    assert store.count("feedback") == 0 and store.count("conversations") == 1  # theirs stays


def test_history_actions_count_against_the_feedback_rate_limit(store, tmp_path):
    settings = Settings(data_dir=tmp_path, rate_limit_feedback="2/minute")
    history = HistorySidebar(
        store, Safety.from_settings(settings, store), PresetLibrary.from_settings(settings)
    )
    session = ChatSession()
    history.search("a", None, session, request())
    history.search("b", None, session, request())
    with pytest.warns(UserWarning, match="2 .* per minute"):
        assert history.search("c", None, session, request()) == (gr.update(), gr.update())
    history.on_load(None, request())  # loading the page is not an action: never refused


def test_list_label_is_plain_text_with_date_and_version(store):
    conv = store.create_conversation("alice")
    store.add_message(conv, "user", "<img src=x onerror=alert(1)> **bold**")
    [summary] = store.conversations.list_for_user("alice")
    assert label(summary).startswith("<img src=x onerror=alert(1)> **bold** · 20")


def test_a_conversation_deleted_in_another_tab_is_not_written_to_again(store, parts):
    chat, history = parts
    key = new_browser_key()
    session = ChatSession()
    chat.submit("first", session, "", request(), key)
    answer(store, session, "ok")
    gone = session.conversation_id
    store.conversations.delete(gone, owner_id(request(), key))  # the other tab's "Yes, delete"
    with pytest.warns(UserWarning, match="deleted"):
        chat.submit("second", session, "", request(), key)
    assert session.conversation_id != gone and [t.content for t in session.turns] == ["second"]
    assert [m.content for m in store.conversation_messages(session.conversation_id)] == ["second"]


def test_an_anonymous_browsers_compare_and_rank_rounds_are_its_data(store, settings, embedded_model):
    """Compare and Rank store in the name of the page's browser key, as the Chat tab does: "My data" and
    "Delete all my data" of an anonymous user cover them (and their votes) after a reload too."""
    from models.service import ModelService
    from playground.compare import CompareTab
    from playground.rank import RankTab

    base = store.versions.ensure_base(embedded_model.model_id)
    service = ModelService(embedded_model, base.id, base.name)
    safety = Safety.from_settings(settings, store, service)
    key = new_browser_key()
    sampling = (0.9, 0.95, 40, 16, 1.1, 3, "")
    compare = CompareTab(settings, store, service, safety=safety)
    state = list(compare.run(request(), "Name a fruit.", "samples", None, None, True, "", key, *sampling))[
        -1
    ][2]
    compare.vote_a(state, request(session="r" * 16))  # after a reload: another Gradio session
    rank = RankTab(settings, store, service, safety=safety)
    rank_state = list(rank.run(request(), "Name a colour.", 2, "", key, *sampling))[-1][-3]
    assert "saved" in rank.save(rank_state, "1", "2", *[None] * 7, request(session="q" * 16))
    owner = owner_id(request(), key)
    rows = list(store.conversations.user_rows(owner))
    assert {r["source"] for r in rows if r["type"] == "conversation"} == {"compare", "rank"}
    assert {r["type"] for r in rows} >= {"vote", "ranking"}
    assert store.feedback.list_comparisons()[0].user_id == owner
    store.conversations.delete_user_data(owner)
    assert store.feedback.list_comparisons() == [] and list(store.conversations.user_rows(owner)) == []
