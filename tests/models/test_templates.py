import pytest

from models.templates import (
    CHATML,
    VICUNA_SYSTEM,
    ChatTemplate,
    TemplateError,
    builtin_template,
    resolve_template,
)

CONVERSATION = [
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "What is 2+2?"},
]


def test_vicuna_v1_1_exact_text_default_system():
    t = builtin_template("vicuna_v1.1")
    assert t.render(CONVERSATION) == (
        f"{VICUNA_SYSTEM} USER: Hello! ASSISTANT: Hi there.</s>USER: What is 2+2? ASSISTANT:"
    )


def test_vicuna_v1_1_exact_text_custom_system_and_no_generation_prompt():
    t = builtin_template("vicuna_v1.1")
    msgs = [{"role": "system", "content": "Be terse."}, *CONVERSATION[:2]]
    assert t.render(msgs, add_generation_prompt=False) == "Be terse. USER: Hello! ASSISTANT: Hi there.</s>"
    assert "USER:" in t.stop


def test_vicuna_matches_fastchat_algorithm():
    """FastChat ADD_COLON_TWO: system + sep, then role + ': ' + msg + seps[i % 2], last 'ASSISTANT:'."""
    seps = [" ", "</s>"]
    ret = VICUNA_SYSTEM + seps[0]
    roles = {"user": "USER", "assistant": "ASSISTANT"}
    for i, m in enumerate(CONVERSATION):
        ret += roles[m["role"]] + ": " + m["content"] + seps[i % 2]
    ret += "ASSISTANT:"
    assert builtin_template("vicuna_v1.1").render(CONVERSATION) == ret


def test_chatml_builtin():
    t = builtin_template("chatml")
    assert t.render(CONVERSATION[:1]) == "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_template_of_the_embedded_model(embedded_model):
    """The template comes from the GGUF metadata (ChatML with SmolLM's default system prompt)."""
    assert embedded_model.template.name == "model"
    assert embedded_model.template.source == embedded_model.metadata["tokenizer.chat_template"]
    assert embedded_model.render_prompt(CONVERSATION[:1]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *CONVERSATION[:1]]
    assert embedded_model.render_prompt(with_system).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_auto_without_embedded_template():
    vicuna = resolve_template("auto", embedded_source=None, model_name="vicuna-7b-v1.5.Q4_K_M.gguf")
    assert vicuna.name == "vicuna_v1.1"
    with pytest.raises(TemplateError, match="--chat-template"):
        resolve_template("auto", embedded_source=None, model_name="mystery.gguf")


def test_template_file_and_errors(tmp_path):
    f = tmp_path / "mine.jinja"
    f.write_text(CHATML)
    assert (
        resolve_template(str(f), embedded_source=None, model_name="x")
        .render(CONVERSATION[:1])
        .startswith("<|im_start|>user")
    )
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}")
    with pytest.raises(TemplateError, match="not valid Jinja"):
        resolve_template(str(bad), embedded_source=None, model_name="x")
    with pytest.raises(TemplateError, match="does not exist"):
        resolve_template(str(tmp_path / "missing.jinja"), embedded_source=None, model_name="x")
    with pytest.raises(TemplateError, match="unknown chat template"):
        resolve_template("llama-9", embedded_source=None, model_name="x")


def test_template_cannot_escape_the_sandbox():
    evil = ChatTemplate(name="evil", source="{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        evil.render(CONVERSATION)
