"""Preset files: the built-ins load, and every kind of mistake names the file and the field."""

import pytest

from models.base import SamplingParams
from playground.presets import (
    BUILTIN_DIR,
    Example,
    PresetError,
    format_examples,
    load_preset_file,
    load_presets,
    parse_examples,
)
from playground.presets.techniques import TECHNIQUES


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_technique_has_a_valid_builtin_preset():
    presets = load_presets(BUILTIN_DIR)
    assert {p.technique for p in presets.values()} == set(TECHNIQUES)
    assert next(iter(presets)) == "plain"  # the default comes first in the picker
    for preset in presets.values():
        assert preset.builtin and preset.name and preset.description
        preset.sampling(SamplingParams())
    assert presets["self-consistency"].options.samples == 5
    assert presets["few-shot-cot"].examples[0].reasoning


def test_preset_parameters_override_only_what_they_set():
    preset = load_presets(BUILTIN_DIR)["self-consistency"]
    params = preset.sampling(SamplingParams(top_k=7, seed=3))
    assert (params.temperature, params.max_new_tokens, params.top_k, params.seed) == (0.7, 320, 7, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'name = "x"\ntechnique = "zero_shot"\n[params]\ntemperature = 9\n',
            "params.temperature: Input should be less than or equal to 5",
        ),
        (
            'name = "x"\ntechnique = "zero_shot"\ntemprature = 1\n',
            "temprature: unknown field; known fields here:",
        ),
        ('technique = "zero_shot"\n', "name: Field required"),
        ('name = "x"\ntechnique = "tree_of_thought"\n', "technique: unknown technique 'tree_of_thought'"),
        (
            'name = "x"\ntechnique = "self_consistency"\n[options]\nsamples = 1\n',
            "options.samples: Input should be greater than or equal to 2",
        ),
        (
            'name = "x"\ntechnique = "self_consistency"\n[options]\nsampels = 3\n',
            "options.sampels: unknown field; known fields here: samples",
        ),
        (
            'name = "x"\ntechnique = "react"\n[options]\ntools = ["shell"]\n',
            "options.tools: unknown tool(s) shell",
        ),
        (
            'name = "x"\ntechnique = "zero_shot"\ntemplate = "Q: {query}"\n',
            "template: must contain {question}",
        ),
        (
            'name = "x"\ntechnique = "zero_shot"\ntemplate = "{question} {facts}"\n',
            "template: unknown placeholder(s) {facts}",
        ),
        (
            'name = "x"\ntechnique = "generated_knowledge"\ntemplate = "{question}"\n',
            "template: must contain {knowledge}",
        ),
        (
            'name = "x"\ntechnique = "defended"\ntemplate = "{open}{question}{close} {instruction} {reminder}"\n',
            "template: {instruction} must come before the fenced input",
        ),
        (
            'name = "x"\ntechnique = "defended"\ntemplate = "{instruction} {question} {open}{close} {reminder}"\n',
            "template: {question} must sit between {open} and {close}",
        ),
        (
            'name = "x"\ntechnique = "few_shot"\n',
            "examples: the few_shot technique needs at least one example",
        ),
        (
            'name = "x"\ntechnique = "few_shot"\n[[examples]]\nquestion = "q"\n',
            "examples#1.answer: Field required",
        ),
        (
            'name = "x"\ntechnique = "few_shot_cot"\n[[examples]]\nquestion = "q"\nanswer = "a"\n',
            "examples#1.reasoning: few_shot_cot examples need a worked reasoning",
        ),
        (
            'name = "x"\ntechnique = "zero_shot"\n[[examples]]\nquestion = "q"\nanswer = "a"\n',
            "does not use examples",
        ),
        (
            'name = "x"\ntechnique = "few_shot_cot"\n[options]\nanswer_format = "{answer}"\n',
            "options.answer_format: must contain {reasoning}",
        ),
        ('id = "Bad Id"\nname = "x"\ntechnique = "zero_shot"\n', "id: 'Bad Id' must be"),
        ('name = "x"\ntechnique = "zero_shot\n', "not valid TOML"),
    ],
)
def test_invalid_files_name_the_file_and_the_field(tmp_path, text, expected):
    path = write(tmp_path, "mine.toml", text)
    with pytest.raises(PresetError) as info:
        load_preset_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message, message


def test_user_presets_override_builtins_by_id_and_bad_files_are_skipped_with_a_report(tmp_path):
    write(
        tmp_path,
        "my_plain.toml",
        'id = "plain"\nname = "My plain"\ntechnique = "zero_shot"\ntemplate = "Q: {question}"\n',
    )
    write(tmp_path, "terse.toml", 'name = "Terse"\ntechnique = "zero_shot"\nsystem_prompt = "One word."\n')
    write(tmp_path, "broken.toml", 'name = "x"\ntechnique = "nope"\n')
    errors = []
    presets = load_presets(BUILTIN_DIR, tmp_path, on_error=errors.append)
    assert presets["plain"].name == "My plain" and not presets["plain"].builtin
    assert presets["terse"].system_prompt == "One word." and presets["terse"].template == "{question}"
    assert len(errors) == 1 and "broken.toml" in str(errors[0])
    with pytest.raises(PresetError, match="broken.toml"):
        load_presets(BUILTIN_DIR, tmp_path)


def test_duplicate_ids_in_one_folder_are_an_error(tmp_path):
    write(tmp_path, "a.toml", 'id = "same"\nname = "A"\ntechnique = "zero_shot"\n')
    write(tmp_path, "b.toml", 'id = "same"\nname = "B"\ntechnique = "zero_shot"\n')
    with pytest.raises(PresetError, match="already used by"):
        load_presets(None, tmp_path)


def test_examples_text_round_trips_and_reports_mistakes():
    examples = [
        Example(question="What is 2 + 2?", answer="4"),
        Example(question="Multi\nline?", reasoning="Think.\nThink more.", answer="yes"),
    ]
    assert parse_examples(format_examples(examples)) == examples
    assert parse_examples("Q: a\nA: b\nQ: c\nA: d") == [
        Example(question="a", answer="b"),
        Example(question="c", answer="d"),
    ]
    assert parse_examples("") == []
    with pytest.raises(PresetError, match="example 1 has no 'A:'"):
        parse_examples("Q: only a question")
    with pytest.raises(PresetError, match="line 1: start each example with 'Q:'"):
        parse_examples("A: answer first")
    with pytest.raises(PresetError, match="two 'A:' lines"):
        parse_examples("Q: q\nA: a\nA: again")


def test_edited_examples_are_checked_like_the_files():
    presets = load_presets(BUILTIN_DIR)
    edited = presets["few-shot"].with_examples([Example(question="2+2?", answer="4")])
    assert len(edited.examples) == 1
    with pytest.raises(PresetError, match="at least one example"):
        presets["few-shot"].with_examples([])
    with pytest.raises(PresetError, match="reasoning"):
        presets["few-shot-cot"].with_examples([Example(question="q", answer="a")])
