"""The Prompt lab: canned attacks, the honest marker check, and both presets run on the real model."""

from models.base import SamplingParams
from models.service import ModelService
from playground.lab import ATTACKS, LAB_SYSTEM_PROMPT, SECRET, LabTab, markers_found, plain_messages, verdict
from playground.presets.library import PresetLibrary
from playground.replies import Interleaved
from playground.safety import Safety


def test_three_kinds_of_attack_are_offered():
    keys = {a.key for a in ATTACKS}
    assert {"injection", "leak", "roleplay"} <= keys
    for attack in ATTACKS:
        assert attack.markers and attack.instruction and attack.payload
    assert SECRET in LAB_SYSTEM_PROMPT


def test_the_check_is_a_case_insensitive_marker_search():
    assert markers_found("ok, i have been pwned", ["PWNED"]) == ["PWNED"]
    assert markers_found("The code is zebra-7741.", [SECRET, "7741"]) == [SECRET, "7741"]
    assert markers_found("No secrets here.", [SECRET]) == []
    assert "Attack worked" in verdict("pwned", ["PWNED"]) and "Attack failed" in verdict("fine", ["PWNED"])
    assert "no verdict" in verdict("", ["x"], failed=True)


def test_plain_prompt_is_a_naive_concatenation():
    msgs = plain_messages("sys", "Summarise:", "text")
    assert msgs == [{"role": "system", "content": "sys"}, {"role": "user", "content": "Summarise:\n\ntext"}]


def test_an_attack_runs_through_both_presets_at_once(embedded_model, store):
    service = ModelService(embedded_model, 1, "base")
    lab = LabTab(PresetLibrary(), service, concurrency=2, safety=Safety(store))
    attack = ATTACKS[0]
    runs = lab.start(LAB_SYSTEM_PROMPT, attack.instruction, attack.payload, temperature=0.0)
    seen = {i for i, event in Interleaved(runs) if event.kind == "answer"}
    plain, defended = runs
    assert seen == {0, 1} and plain.error is None and defended.error is None
    assert plain.preset.id == "plain" and defended.preset.id == "defended"
    assert f"{attack.instruction}\n\n{attack.payload[:30]}" in plain.result.prompt
    prompt = defended.result.prompt
    assert SECRET in prompt and SECRET in plain.result.prompt  # both get the same system prompt
    assert (
        prompt.index(attack.instruction)
        < prompt.index("<<<USER_INPUT_")
        < prompt.index("I bought the Acme kettle")
    )
    assert plain.result.params == SamplingParams(temperature=0.0, max_new_tokens=160, seed=0)
