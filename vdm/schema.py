"""One way to check the artifacts vdm reads (bundle manifests, checkpoint metadata, training states)
before any heavy work: field presence, types and value ranges, each failure one line that names the
file, the field and what was expected.

A schema is a dict of field name -> Rule (a leaf), a nested dict (an object), or `Each` (a mapping
whose every value follows one schema). Fields a schema does not name are allowed: newer writers may
add some, and the format version says when a reader must refuse.

    validate(manifest, MANIFEST_SCHEMA, "bundle/vdm.json")
    -> VdmError: bundle/vdm.json: field networks.fp32.shapes.height is the text '8'; expected a positive integer
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from vdm.errors import VdmError


@dataclass(frozen=True)
class Rule:
    expected: str  # what a valid value is, in words, for the error message
    accepts: Callable[[Any], bool]
    optional: bool = False  # may be absent or null


@dataclass(frozen=True)
class Maybe:
    """An optional object: absent or null, or else following `schema`."""

    schema: Any


@dataclass(frozen=True)
class Each:
    """A non-empty mapping whose every value follows `schema` (and whose keys `key` accepts)."""

    schema: Any
    key: Rule | None = None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TEXT = Rule("a text", lambda v: isinstance(v, str) and v != "")
BOOL = Rule("true or false", lambda v: isinstance(v, bool))
OBJECT = Rule("an object", lambda v: isinstance(v, dict))
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: is_int(v) and v >= 0)
POSITIVE_INT = Rule("a positive integer", lambda v: is_int(v) and v > 0)
NUMBER = Rule("a number", is_number)
SHA256 = Rule("a sha256 hex digest (64 characters 0-9a-f)",
              lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
# A file inside its folder: no directory part, so a manifest cannot point outside its bundle.
FILE_NAME = Rule("a file name inside the bundle", lambda v: isinstance(v, str) and v not in ("", ".", "..")
                 and "/" not in v and "\\" not in v)


def optional(rule: Rule) -> Rule:
    return Rule(rule.expected + " (or absent)", rule.accepts, optional=True)


def one_of(*values: Any) -> Rule:
    return Rule("one of " + ", ".join(repr(v) for v in values), lambda v: v in values)


def list_of(rule: Rule, length: int | None = None) -> Rule:
    count = f"{length} " if length is not None else ""
    return Rule(f"a list of {count}{rule.expected.removeprefix('a ').removeprefix('an ')}s",
                lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(map(rule.accepts, v)))


def describe(value: Any) -> str:
    """How a wrong value reads in an error: its kind and (short) content."""
    if value is None:
        return "null"
    kind = {bool: "the boolean", int: "the integer", float: "the number", str: "the text", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
    if isinstance(value, (list, dict)):
        return f"{kind} of {len(value)}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def validate(data: Any, schema: Any, source: str, where: str = "") -> None:
    """Raise a VdmError naming `source` and the first field of `data` that `schema` refuses."""
    def fail(field: str, found: str, expected: str):
        raise VdmError(f"{source}: field {field} is {found}; expected {expected}")

    if isinstance(schema, Rule):
        if not schema.accepts(data):
            fail(where or "(top level)", describe(data), schema.expected)
    elif isinstance(schema, dict):
        if not isinstance(data, dict):
            fail(where or "(top level)", describe(data), "an object")
        for key, sub in schema.items():
            field = f"{where}.{key}" if where else key
            if data.get(key) is None:
                if isinstance(sub, Maybe) or (isinstance(sub, Rule) and sub.optional):
                    continue
                found = "missing" if key not in data else "null"
                fail(field, found, sub.expected if isinstance(sub, Rule) else "an object")
            validate(data[key], sub.schema if isinstance(sub, Maybe) else sub, source, field)
    elif isinstance(schema, Each):
        if not isinstance(data, dict) or not data:
            fail(where or "(top level)", describe(data), "a non-empty object")
        for key, value in data.items():
            field = f"{where}.{key}" if where else key
            if schema.key is not None and not schema.key.accepts(key):
                fail(field, "an unknown key", f"keys that are {schema.key.expected}")
            validate(value, schema.schema, source, field)
    else:
        raise TypeError(f"not a schema: {schema!r}")
