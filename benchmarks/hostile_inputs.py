"""How many hostile inputs of each kind the playground was given, and what happened to them.

    python -m benchmarks.hostile_inputs              # 300 inputs of each kind
    python -m benchmarks.hostile_inputs --n 1000
    python -m benchmarks.hostile_inputs --quick      # 20 of each kind: a smoke run

Uses the property-based tests' strategies (tests/hostile.py: random Unicode with lone surrogates, NULs
and control characters, script and template payloads, SQL, up to 100k-character strings) and feeds
them to the real code: the Chat tab's submit on a real SQLite store, the API's request parser, the
store API, the importers, chat-template rendering, preset files and moderation files. Every outcome
is counted; "UNHANDLED" counts exceptions other than the clear error each API promises (the tests
fail on any). The browser XSS payloads are counted from their data file (the test that runs them is
tests/e2e/test_xss_browser.py). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import quick
from feedback_store import imports
from feedback_store.store import FeedbackStore, StoreError
from feedback_store.text import clean_input
from models.templates import ChatTemplate, TemplateError
from playground.chat import ChatTab
from playground.moderation.rules import ModerationConfigError, RuleModerator
from playground.openai_api import APIError, OpenAIAPI
from playground.presets.schema import PresetError, load_preset_file
from playground.replies import MAX_MESSAGE_CHARS
from playground.safety import Safety
from playground.session import ChatSession
from settings import Settings
from tests.feedback_store.test_properties import lines, ops, render_line, run_op
from tests.hostile import hostile_text, json_values
from tests.models.test_template_properties import sources
from tests.playground.test_input_properties import toml_lines


def run(name: str, strategy, handle: Callable, n: int, results: dict[str, Counter]) -> None:
    counts = results.setdefault(name, Counter())

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def feed(value):
        try:
            outcome = handle(value)
        except Exception as exc:  # counted, not raised: the figure is how many
            outcome = f"UNHANDLED {type(exc).__name__}"
        counts.update([outcome] if isinstance(outcome, str) else outcome)

    feed()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="inputs of each kind (default 300)")
    args, applied = quick.parse(p, {"n": 20}, argv)
    results: dict[str, Counter] = {}
    warnings.simplefilter("ignore")  # gr.Warning outside Gradio
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = FeedbackStore(tmp / "hostile.db")
        config = Settings(data_dir=tmp, rate_limit_chat="off")
        tab = ChatTab(config, store, None, safety=Safety.from_settings(config, store))

        def chat(text: str) -> str:
            import gradio as gr

            session = ChatSession()
            before = store.count("messages")
            tab.submit(
                text, session, "", gr.Request(username="fuzz", session_hash="h" * 16, client={"host": "::1"})
            )
            added = store.count("messages") - before
            kept = clean_input(text)
            if not kept.strip():
                return "refused: empty" if added == 0 else "WRONG: stored an empty message"
            if added == 2:
                return "refused by the content filter (stored, flagged)"
            stored = store.conversation_messages(session.conversation_id)[0]
            if stored.content != kept[:MAX_MESSAGE_CHARS]:
                return "WRONG: stored text differs"
            if stored.moderation and stored.moderation.get("flagged"):
                return "stored, marked by the content filter"
            if len(kept) > MAX_MESSAGE_CHARS:
                return "stored, truncated with a notice"
            return "stored, cleaned (control chars / surrogates)" if kept != text else "stored as typed"

        run("chat message (Chat tab submit)", hostile_text, chat, args.n, results)

        api = OpenAIAPI.__new__(OpenAIAPI)

        def api_body(body) -> str:
            try:
                api.parse(body)
            except APIError as exc:
                return f"400 {exc.message.split(':')[0].split(' must')[0][:40]}"
            return "accepted"

        body = st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "model": st.just("playground"),
                    "messages": st.lists(
                        st.fixed_dictionaries(
                            {
                                "role": st.sampled_from(["user", "system", "tool"]),
                                "content": st.one_of(hostile_text, json_values),
                            }
                        ),
                        max_size=3,
                    ),
                },
                optional={"temperature": json_values, "max_tokens": json_values, "stream": json_values},
            ),
        )
        run("API request body (/v1/chat/completions)", body, api_body, args.n, results)

        def store_program(program) -> Counter:
            """Per call: written or refused (StoreError); per program: are the rows exact?"""
            outcomes: Counter = Counter()
            with tempfile.TemporaryDirectory() as d:
                s = FeedbackStore(Path(d) / "p.db")
                try:
                    conversations: list[str] = []
                    expected = {"conversations": 0, "messages": 0}
                    for table in (
                        "feedback",
                        "demonstrations",
                        "comparisons",
                        "rankings",
                        "moderation_reports",
                    ):
                        expected[table] = set()
                    for op in program:
                        try:
                            run_op(s, op, conversations, expected)
                            outcomes[f"call {op[0]}: written"] += 1
                        except StoreError:
                            outcomes[f"call {op[0]}: refused with StoreError"] += 1
                    exact = all(
                        s.count(t) == (w if isinstance(w, int) else len(w)) for t, w in expected.items()
                    )
                    outcomes["sequence: rows exact" if exact else "WRONG: rows lost or duplicated"] += 1
                finally:
                    s.close()
            return outcomes

        run("store API (call sequences)", ops, store_program, max(20, args.n // 5), results)

        def import_file(args_) -> str:
            items, fmt = args_
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "in.jsonl"
                path.write_text(
                    "\n".join(render_line(i, fmt) for i in items), encoding="utf-8", errors="surrogatepass"
                )
                s = FeedbackStore(Path(d) / "p.db")
                try:
                    report = imports.import_file(s, path, fmt)
                    if not report.committed:
                        return (
                            "refused whole file, nothing written"
                            if s.count("messages") == 0
                            else "WRONG: partial write"
                        )
                    again = imports.import_file(s, path, fmt)
                    if again.accepted or s.count("comparisons") != report.accepted:
                        return "WRONG: duplicated"
                    return "committed (bad lines listed), re-import added nothing"
                finally:
                    s.close()

        run(
            "import file (JSONL lines)",
            st.tuples(lines, st.sampled_from(imports.FORMATS)),
            import_file,
            max(20, args.n // 5),
            results,
        )

        def template(source: str) -> str:
            try:
                ChatTemplate(name="fuzz", source=source).render([{"role": "user", "content": "{{ 7 * 7 }}"}])
            except TemplateError:
                return "TemplateError (clear message)"
            return "rendered"

        run("chat template source", sources, template, args.n, results)

        def toml_file(
            name: str, load: Callable[[Path], object], error: type[Exception], refused: str
        ) -> Callable[[str], str]:
            """A fuzz target: the text written to the file ``name`` and loaded with ``load``; ``refused``
            when that raises ``error`` (a clean refusal), else "loaded"."""

            def outcome(text: str) -> str:
                path = tmp / name
                path.write_bytes(text.encode("utf-8", "surrogatepass"))
                try:
                    load(path)
                except error:
                    return refused
                return "loaded"

            return outcome

        preset_file = toml_file(
            "preset.toml", load_preset_file, PresetError, "PresetError naming the file and field"
        )
        run("preset file", toml_lines, preset_file, args.n, results)
        moderation_file = toml_file(
            "moderation.toml",
            RuleModerator.from_files,
            ModerationConfigError,
            "ModerationConfigError naming the problem",
        )
        run("moderation file", toml_lines, moderation_file, args.n, results)
        with contextlib.suppress(Exception):
            store.close()

    payloads = [
        line
        for line in resources.files("benchmarks")
        .joinpath("tasks", "xss_payloads.txt")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    renders = (
        len(payloads) * 2 + 5
    )  # Chat: each as a message and as a reply; Compare 2, Rank 1 box set, Lab 2
    results["script payload in the browser (tests/e2e/test_xss_browser.py)"] = Counter(
        {
            f"{len(payloads)} payloads, {renders}+ renders in 5 tabs: none ran (checked by the test)": len(
                payloads
            )
        }
    )

    total_unhandled = 0
    for kind, counts in results.items():
        print(f"\n{kind}: {sum(counts.values())} inputs")
        for outcome, n in counts.most_common():
            print(f"  {n:>6}  {outcome}")
            if outcome.startswith(("UNHANDLED", "WRONG")):
                total_unhandled += n
    print(f"\nunhandled or wrong: {total_unhandled}")
    quick.announce(applied, args.quick)
    print(
        json.dumps({kind: dict(c) for kind, c in results.items()} | {"unhandled_or_wrong": total_unhandled})
    )
    return 1 if total_unhandled else 0


if __name__ == "__main__":
    sys.exit(main())
