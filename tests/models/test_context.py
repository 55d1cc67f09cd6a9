import pytest

from models.context import fit_to_context


def render(msgs):
    return "".join(f"[{m['role']}]{m['content']}" for m in msgs)


def count(text):  # one token per 4 characters, like a real BPE on English text
    return (len(text) + 3) // 4


def test_fits_untouched():
    msgs = [{"role": "user", "content": "hello"}]
    fitted = fit_to_context(msgs, render=render, count_tokens=count, context_length=100, max_new_tokens=50)
    assert fitted.messages == msgs and fitted.notices == [] and fitted.max_new_tokens == 50


def test_drops_oldest_turns_keeps_system_and_last():
    msgs = [{"role": "system", "content": "sys"}]
    for i in range(10):
        msgs += [
            {"role": "user", "content": f"question {i} " * 10},
            {"role": "assistant", "content": f"answer {i} " * 10},
        ]
    msgs.append({"role": "user", "content": "last question"})
    fitted = fit_to_context(msgs, render=render, count_tokens=count, context_length=200, max_new_tokens=50)
    assert fitted.messages[0]["content"] == "sys"
    assert fitted.messages[-1]["content"] == "last question"
    assert fitted.messages[1]["role"] == "user"
    assert count(fitted.prompt) + fitted.max_new_tokens <= 200
    assert "left out" in fitted.notices[0]


def test_truncates_a_huge_message_with_notice():
    huge = "x" * 100_000
    fitted = fit_to_context(
        [{"role": "user", "content": huge}],
        render=render,
        count_tokens=count,
        context_length=1000,
        max_new_tokens=100,
    )
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 1000
    assert len(fitted.messages[-1]["content"]) < 5000
    assert any("truncated from 100,000" in n for n in fitted.notices)


def test_system_prompt_too_long_is_an_error():
    msgs = [{"role": "system", "content": "s" * 10_000}, {"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="system prompt"):
        fit_to_context(msgs, render=render, count_tokens=count, context_length=100, max_new_tokens=10)
