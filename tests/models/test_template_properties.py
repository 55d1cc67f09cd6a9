"""Property-based tests (Hypothesis) of the chat-template renderers with random and hostile messages
and template sources: a render returns text or raises ``TemplateError`` (a clear error), nothing else;
message text is data, never template code (``{{ 7 * 7 }}`` stays literal); the sandbox holds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.templates import CHATML, VICUNA_V1_1, ChatTemplate, TemplateError, builtin_template
from tests.hostile import hostile_text

SETTINGS = settings(max_examples=60, deadline=None, database=None)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", ""]), "content": hostile_text}
    ),
    max_size=6,
)


@SETTINGS
@given(messages, st.sampled_from(["chatml", "vicuna_v1.1"]), st.booleans())
def test_builtin_templates_render_message_text_literally(msgs, name, generation_prompt):
    template = builtin_template(name)
    try:
        out = template.render(msgs, add_generation_prompt=generation_prompt)
    except TemplateError as exc:  # vicuna refuses roles it has no place for, with the reason
        assert name == "vicuna_v1.1" and "supports system, user and assistant" in str(exc)
        return
    position = 0
    for m in msgs if name == "chatml" else [m for m in msgs if m["role"] in ("user", "assistant")]:
        found = out.find(m["content"], position)
        assert found >= 0  # verbatim, in order: "{{ 7 * 7 }}" is not evaluated
        position = found + len(m["content"])


# Template sources as they come from a model file or a user's .jinja file: fragments of real
# templates, broken syntax, and expressions that fail at render time.
fragments = st.sampled_from(
    [
        CHATML,
        VICUNA_V1_1,
        "{{ messages[0]['content'] }}",
        "{{ messages[99].content }}",
        "{{ 1 / 0 }}",
        "{{ none.attribute }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{{ range(10**9) | list | length }}",
        "{{ raise_exception('no') }}",
        "{{ strftime_now('%Y') }}",
        "{% for m in messages %}{{ m.role | upper }}{% endfor %}",
        "{% if %}",
        "{{ unclosed",
        "{% endfor %}",
        "{{ 'a' ~ 1 }}",
        "{{ messages | map(attribute='content') | join('|') }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ int('x') }}",
        "{{ (messages | first).content | int }}",
        "plain text",
    ]
)
sources = st.lists(st.one_of(fragments, hostile_text), min_size=1, max_size=4).map("".join)


@SETTINGS
@given(sources, messages)
def test_any_template_source_renders_or_fails_clearly(source, msgs):
    template = ChatTemplate(name="fuzz", source=source)
    try:
        out = template.render(msgs)
    except TemplateError as exc:
        assert "fuzz" in str(exc) or str(exc)
        return
    assert isinstance(out, str)
    assert "<class" not in out and "__globals__" not in source or "function" not in out


@pytest.mark.parametrize(
    "source",
    ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__.os.system('id') }}"],
)
def test_the_sandbox_blocks_escapes(source):
    with pytest.raises(TemplateError):
        ChatTemplate(name="evil", source=source).render([{"role": "user", "content": "hi"}])
