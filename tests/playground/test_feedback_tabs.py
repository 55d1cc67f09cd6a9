"""The rating tabs' logic without a browser: the like handler, the panel's save, rank validation, the
stream merger, the Compare modes on the real embedded model, and the Dashboard on a real database."""

from pathlib import Path

import pytest
from gradio import LikeData
from matplotlib.figure import Figure

from feedback_store.store import AssistantTurn, FeedbackStore
from models.base import SamplingParams
from models.service import ModelService
from playground.compare import CompareTab, presets_mode, samples_mode, versions_mode
from playground.dashboard import EMPTY, DashboardTab
from playground.feedback_ui import WAIT_FOR_REPLY, FeedbackPanel, thumbs_value
from playground.rank import order_from_ranks, ranking_from_ranks
from playground.replies import Interleaved
from playground.safety import Safety
from playground.session import ChatSession, Turn
from settings import Settings


def chat(store: FeedbackStore) -> tuple[ChatSession, list[int]]:
    version = store.versions.ensure_base("m.gguf").id
    conv = store.create_conversation("anonymous")
    u = store.add_message(conv, "user", "Capital of France?")
    r = store.add_assistant_message(conv, u, AssistantTurn(content="Lyon.", model_version_id=version))
    session = ChatSession(user_id="anonymous", conversation_id=conv)
    session.turns = [
        Turn("user", "Capital of France?", u),
        Turn("assistant", "Lyon.", r),
        Turn("assistant", "Par", None),
    ]
    session.chatbot_messages()
    return session, [u, r]


def test_thumbs_value():
    assert thumbs_value(True) == (1, [])
    assert thumbs_value(False) == (-1, [])
    assert thumbs_value("Too long") == (-1, ["too_long"])
    assert thumbs_value("") == (None, [])


def test_like_handler_upserts_and_refuses_a_streaming_reply(store):
    session, (_, reply) = chat(store)
    panel = FeedbackPanel(store, Safety(store))
    for _ in range(2):  # Gradio fires a custom option twice
        out = panel.on_like(
            session, None, LikeData(None, {"index": 1, "value": "Lyon.", "liked": "Incorrect"}), None
        )
    assert out[0] == reply and "Lyon." in out[1]
    [row] = store.feedback.list_feedback()
    assert (row.user_id, row.thumbs, row.reasons) == ("anonymous", -1, ("incorrect",))
    with pytest.warns(UserWarning, match=WAIT_FOR_REPLY):
        panel.on_like(session, None, LikeData(None, {"index": 2, "value": "Par", "liked": True}), None)
    with pytest.warns(UserWarning, match="Only replies"):
        panel.on_like(session, None, LikeData(None, {"index": 0, "value": "q", "liked": True}), None)
    assert len(store.feedback.list_feedback()) == 1
    panel.on_like(session, reply, LikeData(None, {"index": 1, "value": "Lyon.", "liked": ""}), None)
    assert store.feedback.list_feedback()[0].thumbs is None  # taken back


def test_panel_save_writes_feedback_and_a_better_answer(store):
    session, (_, reply) = chat(store)
    panel = FeedbackPanel(store, Safety(store))
    args = (session, None, "down", ["incorrect"], ["clear"], 2, ["harmful_advice"], " wrong ", "Paris.")
    for _ in range(2):
        target, status = panel.save(*args, None)
    assert target == reply and status.startswith("Saved: 👎 · incorrect · score 2/7")
    [row] = store.feedback.list_feedback()
    assert (row.thumbs, row.reasons, row.score, row.flags, row.note) == (
        -1,
        ("incorrect",),
        2,
        ("harmful_advice",),
        "wrong",
    )
    assert store.feedback.get_demonstration(reply, "anonymous").content == "Paris."
    with pytest.warns(UserWarning, match="same as the reply"):
        _, status = panel.save(session, None, None, [], [], None, [], "", "Lyon.", None)
    assert status.startswith("Not saved")
    fields = panel.follow_newest(session, None)
    assert fields[0] == reply and fields[2] == "down" and fields[5] == 2 and fields[8] == "Paris."


def test_order_from_ranks():
    assert order_from_ranks(["2", "1", "3", None, None], [10, 11, 12]) == [11, 10, 12]
    with pytest.raises(ValueError, match="missing: reply 2"):
        order_from_ranks(["1", None, "2"], [10, 11, 12])
    # ties are allowed (InstructGPT's y_D > y_C > y_A = y_B), tied replies in display order; a ranking
    # where every reply ties is refused
    assert ranking_from_ranks(["1", "2", "1"], [10, 11, 12]) == ([10, 12, 11], [1, 1, 2])
    with pytest.raises(ValueError, match="Every reply has rank 1: give at least two different ranks"):
        order_from_ranks(["1", "1", "1"], [10, 11, 12])
    with pytest.raises(ValueError, match="ranks 1 to 2"):
        order_from_ranks(["1", "3"], [10, 11])


def test_interleave_yields_every_chunk_of_every_stream():
    def stream(name, n, fail=False):
        for i in range(n):
            yield f"{name}{i}"
        if fail:
            raise RuntimeError("boom")

    merged = Interleaved([stream("a", 50), stream("b", 3, fail=True), stream("c", 0)])
    got = list(merged)
    assert merged.join(5)
    assert [c for i, c in got if i == 0] == [f"a{i}" for i in range(50)]
    assert [c for i, c in got if i == 1] == ["b0", "b1", "b2"]  # a failing stream just ends


@pytest.fixture
def service(embedded_model, store):
    version = store.versions.ensure_base(embedded_model.model_id, name="base")
    return ModelService(embedded_model, version.id, version.name)


def test_samples_mode_streams_two_different_seeds(service):
    mode = samples_mode(service)
    with pytest.raises(ValueError, match="temperature"):
        mode.make_pair(None, None, SamplingParams(temperature=0.0))
    a, b = mode.make_pair(None, None, SamplingParams(max_new_tokens=8, seed=41))
    assert a.label.endswith("seed 41") and b.label.endswith("seed 42")
    messages = [{"role": "user", "content": "Say hi."}]
    results = [g.wait() for g in (a.start(messages), b.start(messages))]
    assert [r.params.seed for r in results] == [41, 42] and all(
        r.version_id == service.version_id for r in results
    )


def test_versions_mode_needs_two_loaded_versions(service, store):
    mode = versions_mode(service)
    assert "Only one model version" in mode.unavailable()
    settings = Settings()
    tab = CompareTab(settings, store, service, safety=Safety.from_settings(settings, store, service))
    _a, _b, note, go = tab.on_mode("versions")
    assert "Only one model version" in note and go["interactive"] is False
    with pytest.raises(ValueError, match="two different"):
        mode.make_pair("1", "1", SamplingParams())


def test_presets_mode_streams_two_techniques_and_stores_their_traces(service, store):
    from playground.presets.library import PresetLibrary

    library = PresetLibrary.from_settings(Settings(data_dir=store.path.parent))
    mode = presets_mode(service, library)
    assert {"plain", "zero-shot-cot"} <= {value for _, value in mode.choices()}
    with pytest.raises(ValueError, match="two different"):
        mode.make_pair("plain", "plain", SamplingParams())
    settings = Settings()
    tab = CompareTab(
        settings, store, service, presets=library, safety=Safety.from_settings(settings, store, service)
    )
    steps = list(
        tab.run(
            None,  # the request
            "What is 2 + 3?",
            "presets",
            "plain",
            "zero-shot-cot",
            False,
            "",
            None,  # no browser key: the session's anonymous id
            0.7,
            0.95,
            40,
            32,
            1.1,
            5,
            "",
        )
    )
    state = steps[-1][2]
    assert state is not None and {state.label_a, state.label_b} == {
        library.get("plain").name,
        library.get("zero-shot-cot").name,
    }
    rows = {
        m.preset_id: m
        for m in store.conversation_messages(store.get_message(state.message_a).conversation_id)
    }
    assert set(rows) >= {"plain", "zero-shot-cot"}
    assert rows["zero-shot-cot"].trace and rows["zero-shot-cot"].content  # two calls: reasoning, then answer
    assert all(m.model_version_id == service.version_id for m in rows.values() if m.role == "assistant")


def test_dashboard_empty_then_filled(store):
    dash = DashboardTab(store, safety=Safety(store), bootstrap_rounds=20)
    assert dash.refresh()[0] == EMPTY
    v1 = store.versions.ensure_base("m.gguf", name="base").id
    with store.write() as db:
        v2 = db.execute(
            "INSERT INTO model_versions (name, base_model, adapter_path, status, created_at) "
            "VALUES ('dpo', 'm.gguf', '/a', 'candidate', '2026-01-01')"
        ).lastrowid
    conv = store.create_conversation("u")
    for i in range(6):
        u = store.add_message(conv, "user", f"q{i}")
        a = store.add_assistant_message(conv, u, AssistantTurn(content=f"a{i}", model_version_id=v1))
        b = store.add_assistant_message(conv, u, AssistantTurn(content=f"b{i}", model_version_id=v2))
        store.feedback.record_comparison(a, b, "u", "b" if i < 5 else "tie", mode="versions")
        store.feedback.record_feedback(b, "u", thumbs=1)
    totals, activity, thumbs, versions_plot, versions_table, presets_plot, presets_table = dash.refresh()
    assert "**6** A/B votes" in totals
    assert all(isinstance(f, Figure) for f in (activity, thumbs, versions_plot))
    assert [row[1] for row in versions_table] == ["v2 dpo", "v1 base"]
    assert presets_plot is None and "no battles yet" in presets_table[0][1]
    path = dash.export("preferences")
    assert path.endswith("preferences.jsonl") and len(Path(path).read_text().splitlines()) == 5
