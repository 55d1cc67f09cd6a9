"""Property-based tests (Hypothesis) of the store API and the importers with random and hostile input:
no exception escapes except the store's own ``StoreError`` (a clear refusal), and no row is lost or
duplicated: the database holds exactly the rows the successful calls imply."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_store import imports
from feedback_store.store import AssistantTurn, FeedbackStore, StoreError
from feedback_store.text import storable
from tests.hostile import hostile_text, json_values

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Mostly ids that exist (the first rows written), sometimes ids that do not or are not ids at all.
ids = st.one_of(
    st.integers(1, 6), st.integers(1, 6), st.integers(-3, 40), st.sampled_from([None, "1", 1.5, True, 2**70])
)
users = st.one_of(st.sampled_from(["alice", "bob", ""]), hostile_text)
message_op = st.tuples(
    st.just("message"),
    st.integers(0, 5),
    st.sampled_from(["assistant", "assistant", "user", "system", "tool", ""]),
    st.one_of(hostile_text, hostile_text, st.integers(), st.none()),
    st.one_of(st.none(), st.none(), ids),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("conversation"), users, st.one_of(st.none(), hostile_text)),
        message_op,
        message_op,
        st.tuples(
            st.just("feedback"),
            ids,
            users,
            st.sampled_from([1, -1, None, 0, 2, "up"]),
            st.sampled_from([None, 1, 7, 0, 8, "5", True]),
            st.one_of(st.none(), hostile_text),
        ),
        st.tuples(st.just("demonstration"), ids, users, st.one_of(hostile_text, st.none(), st.integers())),
        st.tuples(
            st.just("comparison"), ids, ids, users, st.sampled_from(["a", "b", "tie", "both_bad", "x"])
        ),
        st.tuples(st.just("ranking"), st.lists(ids, max_size=10), users),
        st.tuples(st.just("report"), ids, users, st.sampled_from(["false_positive", "false_negative", "?"])),
    ),
    max_size=30,
)


def run_op(store: FeedbackStore, op: tuple, conversations: list[str], expected: dict) -> None:
    kind = op[0]
    if kind == "conversation":
        _, user, system = op
        conversations.append(store.create_conversation(user, system_prompt=system))
        expected["conversations"] += 1
    elif kind == "message":
        _, conv_index, role, content, parent = op
        if not conversations:
            return
        conv = conversations[conv_index % len(conversations)]
        if role == "assistant":
            mid = store.add_message(conv, role, content, parent_id=parent, turn=AssistantTurn(content, None))
        else:
            mid = store.add_message(conv, role, content, parent_id=parent)
        assert store.get_message(mid).content == storable(content)  # what was sent, minus what SQLite refuses
        expected["messages"] += 1
    elif kind == "feedback":
        _, mid, user, thumbs, score, note = op
        store.feedback.record_feedback(mid, user, thumbs=thumbs, score=score, note=note)
        expected["feedback"].add((mid, user))
    elif kind == "demonstration":
        _, mid, user, text = op
        store.feedback.add_demonstration(mid, user, text)
        expected["demonstrations"].add((mid, user))
    elif kind == "comparison":
        _, a, b, user, vote = op
        store.feedback.record_comparison(a, b, user, vote, mode="samples")
        expected["comparisons"].add((a, b, user))
    elif kind == "ranking":
        _, order, user = op
        store.feedback.record_ranking(order, user)
        expected["rankings"].add((tuple(sorted(order)), user))
    elif kind == "report":
        _, mid, user, report_kind = op
        store.hygiene.record_report(mid, user, report_kind)
        expected["moderation_reports"].add((mid, user))


@SETTINGS
@given(ops)
def test_store_api_refuses_clearly_and_keeps_exactly_the_written_rows(program):
    with tempfile.TemporaryDirectory() as tmp:
        store = FeedbackStore(Path(tmp) / "p.db")
        try:
            conversations: list[str] = []
            expected = {"conversations": 0, "messages": 0}
            for table in ("feedback", "demonstrations", "comparisons", "rankings", "moderation_reports"):
                expected[table] = set()
            for op in program:
                with contextlib.suppress(StoreError):  # a clear refusal; anything else fails the test
                    run_op(store, op, conversations, expected)
            for table, want in expected.items():
                assert store.count(table) == (want if isinstance(want, int) else len(want)), table
            items = store.db.execute("SELECT COUNT(*) FROM ranking_items").fetchone()[0]
            assert items == sum(len(key[0]) for key in expected["rankings"])
        finally:
            store.close()


def pair_line(fmt: str, context: list[dict], chosen: str, rejected: str) -> dict:
    if fmt == "trl-preference":
        return {"prompt": context, "chosen": chosen, "rejected": rejected}
    transcript = "".join(
        f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in context
    )
    return {
        "chosen": f"{transcript}\n\nAssistant: {chosen}",
        "rejected": f"{transcript}\n\nAssistant: {rejected}",
    }


turns = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), hostile_text), min_size=1, max_size=3).map(
    lambda ts: [{"role": r, "content": c} for r, c in ts] + [{"role": "user", "content": "q?"}]
)
good_rows = st.builds(lambda ctx, c, r: (ctx, c, r), turns, hostile_text, hostile_text)
lines = st.one_of(
    st.lists(good_rows.map(lambda t: ("pair", t)), min_size=1, max_size=8),  # a clean file
    st.lists(
        st.one_of(
            good_rows.map(lambda t: ("pair", t)),
            json_values.map(lambda v: ("json", v)),
            st.sampled_from(['{"chosen": "truncated', "not json", "[1, 2", "\ufeff{}", ""]).map(
                lambda s: ("raw", s)
            ),
        ),
        max_size=12,
    ),
)


def render_line(item, fmt: str) -> str:
    kind, value = item
    if kind == "pair":
        return json.dumps(pair_line(fmt, *value))
    if kind == "json":
        return json.dumps(value)
    return value


@SETTINGS
@given(lines, st.sampled_from(imports.FORMATS), st.booleans())
def test_imports_are_all_or_nothing_and_never_duplicate(items, fmt, strict):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text(
            "\n".join(render_line(i, fmt) for i in items), encoding="utf-8", errors="surrogatepass"
        )
        store = FeedbackStore(Path(tmp) / "p.db")
        try:
            report = imports.import_file(store, path, fmt, strict=strict)  # never raises
            counts = {t: store.count(t) for t in ("conversations", "messages", "comparisons")}
            if not report.committed:
                assert report.error and counts == {"conversations": 0, "messages": 0, "comparisons": 0}
                return
            assert report.accepted + report.duplicates + len(report.rejected) == report.lines
            assert counts["conversations"] == counts["comparisons"] == report.accepted
            per_conversation = store.db.execute(
                "SELECT COUNT(*) FROM messages WHERE finish_reason = 'imported' GROUP BY conversation_id"
            ).fetchall()
            assert all(n == (2,) for n in per_conversation)
            again = imports.import_file(store, path, fmt, strict=strict)
            assert again.committed and again.accepted == 0
            assert again.duplicates == report.accepted + report.duplicates
            assert {t: store.count(t) for t in counts} == counts
        finally:
            store.close()
