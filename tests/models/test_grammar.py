"""JSON Schema -> llama.cpp grammar: which schemas are refused because a grammar would not enforce them, and
the grammar's strings exclude what JSON forbids. Generation under grammars is tested in test_llamacpp.py."""

import json
import re

import pytest

from models.base import UnsupportedParameter
from models.grammar import ANY_OBJECT, schema_to_gbnf, unenforceable


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {
            "type": "object",
            "title": "Person",
            "properties": {
                "name": {"type": "string", "maxLength": 20, "description": "a name"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "kind": {"enum": ["a", "b"]},
                "when": {"type": "string", "format": "date"},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "next": {"$ref": "#/$defs/node"},
                "maybe": {"type": ["string", "null"]},
            },
            "required": ["name"],
            "additionalProperties": False,
            "$defs": {"node": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        },
        {"anyOf": [{"type": "object", "properties": {"a": {"const": 1}}}, {"type": "string"}]},
    ],
)
def test_enforceable_schemas_become_grammars(schema):
    assert unenforceable(schema) == []
    assert "root ::=" in schema_to_gbnf(json.dumps(schema))


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "integer", "minimum": 0}, "'minimum'"),
        (
            {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}},
            "properties.n uses 'multipleOf'",
        ),
        ({"type": "string", "format": "email"}, "format 'email'"),
        ({"type": "array", "maxItems": 2}, "only together with items"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "'x', which is not in its properties"),
        ({"type": "object", "anyOf": [{"type": "object"}]}, "without other keywords"),
        ({"allOf": [{"type": "object"}]}, "'allOf'"),
        ({"type": "string", "pattern": "[a-z]+"}, "anchored"),
        ({"$ref": "https://example.com/s.json"}, "only local references"),
        ({"type": "text"}, "not a JSON Schema type"),
    ],
)
def test_what_a_grammar_would_skip_is_refused(schema, why):
    assert any(why in problem for problem in unenforceable(schema)), unenforceable(schema)
    with pytest.raises(UnsupportedParameter, match=re.escape(why)) as caught:
        schema_to_gbnf(json.dumps(schema))
    assert caught.value.param == "json_schema"


def test_strings_exclude_raw_control_characters():
    """llama-cpp-python's converter lets a string hold a raw newline, which json.loads rejects."""
    grammar = schema_to_gbnf(ANY_OBJECT)
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char_rule
