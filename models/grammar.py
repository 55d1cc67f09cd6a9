"""JSON Schema -> llama.cpp grammar (GBNF), and which schemas such a grammar can really enforce.

The conversion is llama-cpp-python's own ``llama_cpp.llama_grammar.json_schema_to_gbnf``, with one fix:
its string rule allows raw control characters (a newline inside a string), which JSON forbids and
``json.loads`` rejects; we swap in the rule upstream llama.cpp uses today.

The converter silently skips keywords it does not implement (``minimum``, ``multipleOf``, formats such as
``email``...). A reply could then finish and still not match the schema, so :func:`unenforceable` lists
them and the caller refuses the schema instead. ``oneOf`` is enforced as ``anyOf`` (a reply matching two
alternatives is possible only when they overlap).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from models.base import UnsupportedParameter

ANY_OBJECT = '{"type": "object"}'  # the schema of OpenAI's json_object mode

# Keywords the converter turns into grammar rules, and annotations that constrain nothing.
_ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
    "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength",
}  # fmt: skip
_ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly",
}  # fmt: skip
_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
_FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")

_UNSAFE_CHAR = r'[^"\\] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def unenforceable(schema: Any, path: str = "schema") -> list[str]:
    """What in ``schema`` a llama.cpp grammar would not enforce, one sentence each (empty: all of it)."""
    if isinstance(schema, bool):
        return [] if schema else [f"{path} is false: no value matches it"]
    if not isinstance(schema, dict):
        return [f"{path} must be a JSON object (a schema)"]
    problems = []
    for key in schema:
        if key not in _ENFORCED and key not in _ANNOTATIONS:
            problems.append(f"{path} uses '{key}', which the grammar cannot enforce")
    types = schema.get("type")
    for t in types if isinstance(types, list) else [types] if types is not None else []:
        if t not in _TYPES:
            problems.append(f"{path}.type {t!r} is not a JSON Schema type")
    if isinstance(types, list) and len(schema.keys() - _ANNOTATIONS) > 1:
        problems.append(f"{path}: a list of types is enforced only without other keywords beside it")
    fmt = schema.get("format")
    if fmt is not None and fmt not in _FORMATS:
        problems.append(
            f"{path}.format {fmt!r} cannot be enforced (supported: {', '.join(sorted(_FORMATS))})"
        )
    if ("minLength" in schema or "maxLength" in schema) and ("pattern" in schema or fmt is not None):
        problems.append(f"{path}: minLength/maxLength cannot be combined with pattern or format")
    if ("minItems" in schema or "maxItems" in schema) and "items" not in schema:
        problems.append(f"{path}: minItems/maxItems are enforced only together with items")
    pattern = schema.get("pattern")
    if pattern is not None and not (
        isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
    ):
        problems.append(f"{path}.pattern must be anchored with ^ and $")
    for union in ("anyOf", "oneOf"):
        if union in schema:
            if schema.keys() - _ANNOTATIONS - {union, "$defs", "definitions"}:
                problems.append(f"{path}.{union} is enforced only without other keywords beside it")
            alternatives = schema[union]
            if not isinstance(alternatives, list) or not alternatives:
                problems.append(f"{path}.{union} must be a non-empty list")
            else:
                for i, sub in enumerate(alternatives):
                    problems += unenforceable(sub, f"{path}.{union}[{i}]")
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if isinstance(required, list) and isinstance(properties, dict):
        for name in required:
            if name not in properties:
                problems.append(f"{path}.required names {name!r}, which is not in its properties")
    for key in _SUBSCHEMA_MAPS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, s in sub.items():
                problems += unenforceable(s, f"{path}.{key}.{name}")
        elif sub is not None:
            problems.append(f"{path}.{key} must be an object")
    for key in ("additionalProperties", "items"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            problems += unenforceable(sub, f"{path}.{key}")
        elif isinstance(sub, list):
            for i, s in enumerate(sub):
                problems += unenforceable(s, f"{path}.{key}[{i}]")
    if isinstance(schema.get("prefixItems"), list):
        for i, s in enumerate(schema["prefixItems"]):
            problems += unenforceable(s, f"{path}.prefixItems[{i}]")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        problems.append(f"{path}.$ref {ref!r}: only local references (#/...) are supported")
    return problems


@functools.lru_cache(maxsize=64)
def schema_to_gbnf(schema_text: str) -> str:
    """The GBNF grammar of a JSON Schema (JSON text); raises UnsupportedParameter("json_schema", ...)
    when the schema cannot be enforced. Cached: clients repeat the same schema request after request."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = json.loads(schema_text)
    problems = unenforceable(schema)
    if problems:
        raise UnsupportedParameter("json_schema", "; ".join(problems[:5]))
    try:
        grammar = json_schema_to_gbnf(schema_text)
    except Exception as exc:  # the converter asserts and raises on what it cannot read
        raise UnsupportedParameter("json_schema", f"cannot build a grammar from the schema: {exc}") from exc
    if _UNSAFE_CHAR in grammar:
        grammar = grammar.replace(_UNSAFE_CHAR, _JSON_CHAR)
    return grammar
