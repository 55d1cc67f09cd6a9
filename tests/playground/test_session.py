from playground.session import ChatSession, Turn


def make_session():
    s = ChatSession(user_id="u", conversation_id="c")
    s.turns = [
        Turn("user", "q1", 1),
        Turn("assistant", "a1", 2),
        Turn("user", "q2", 3),
        Turn("assistant", "a2", 4),
    ]
    s.chatbot_messages()
    return s


def test_views():
    s = make_session()
    assert s.chatbot_messages()[1] == {"role": "assistant", "content": "a1"}
    msgs = s.model_messages("  Be brief. ")
    assert msgs[0] == {"role": "system", "content": "Be brief."} and len(msgs) == 5
    assert s.model_messages("")[0]["role"] == "user"
    assert s.last_message_id == 4 and not s.awaiting_reply


def test_retry_from_assistant_or_user_index_cuts_after_the_user_message():
    s = make_session()
    assert s.cut_for_retry(s.turn_index(3))
    assert [t.message_id for t in s.turns] == [1, 2, 3] and s.awaiting_reply
    s = make_session()
    assert s.cut_for_retry(s.turn_index(2))
    assert [t.message_id for t in s.turns] == [1, 2, 3]


def test_undo_returns_the_text_and_removes_the_exchange():
    s = make_session()
    assert s.undo(s.turn_index(2)) == "q2"
    assert [t.message_id for t in s.turns] == [1, 2]


def test_edit_branches_from_the_same_parent():
    s = make_session()
    assert s.parent_of(2) == 2
    s.replace_user(2, "q2 edited", 5)
    assert [(t.content, t.message_id) for t in s.turns] == [("q1", 1), ("a1", 2), ("q2 edited", 5)]


def test_bad_indices_are_ignored():
    s = make_session()
    assert s.turn_index(99) is None and s.turn_index(-1) is None and s.turn_index("x") is None
    assert s.turn_index([1, 0]) == 1
