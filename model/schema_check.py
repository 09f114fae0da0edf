"""JSON Schema validation of one document, with every error turned into a located, actionable Problem."""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

import schemas
from model.types import API_VERSION, Problem
from model.yamldoc import Document, PathKey

KINDS = ("Environment", "Application")


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.load(kind))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'hostSelector'?)" when ``word`` is close to one of ``choices``, else ""."""
    choices = list(choices)
    squashed = {c.lower().replace("_", "").replace("-", ""): c for c in choices}
    exact = squashed.get(word.lower().replace("_", "").replace("-", ""))
    close = [exact] if exact else difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_header(doc: Document) -> tuple[str | None, list[Problem]]:
    """The document's kind when it is one we know, and the problems of its apiVersion/kind."""
    data = doc.data
    if not isinstance(data, dict):
        what = _describe(data)
        return None, [doc.problem((), f"a manifest must be a mapping with apiVersion, kind, metadata and spec, "
                                      f"not {what}", code="wrong-type")]
    problems: list[Problem] = []
    kind = data.get("kind")
    if "kind" not in data:
        problems.append(doc.problem((), "missing 'kind': add kind: Environment or kind: Application",
                                    code="missing-field"))
    elif kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS) if isinstance(kind, str) else ""
        problems.append(doc.problem(("kind",), f"unknown kind {kind!r}{hint}: expected Environment or Application",
                                    code="unknown-kind"))
    api = data.get("apiVersion")
    if "apiVersion" not in data:
        problems.append(doc.problem((), f"missing 'apiVersion': add apiVersion: {API_VERSION}", code="missing-field"))
    elif api != API_VERSION:
        problems.append(doc.problem(("apiVersion",), f"unsupported apiVersion {api!r}: use {API_VERSION}",
                                    code="unknown-api-version"))
    return (kind if kind in KINDS else None), problems


def check_schema(doc: Document, kind: str) -> list[Problem]:
    """Every schema problem of ``doc`` (apiVersion and kind are checked by :func:`check_header`)."""
    problems: list[Problem] = []
    for error in _validator(kind).iter_errors(doc.data):
        path: PathKey = tuple(error.absolute_path)
        if path in (("apiVersion",), ("kind",)):
            continue
        if error.validator == "required" and error.message.endswith(("'apiVersion' is a required property",
                                                                     "'kind' is a required property")) and not path:
            continue
        problems.extend(_problems(doc, error, path))
    problems.sort(key=lambda p: (p.line, p.column))
    return problems


def _problems(doc: Document, error: ValidationError, path: PathKey) -> list[Problem]:
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    validator = error.validator
    value = error.instance
    hint = schema.get("x-hint")
    where = _name(path)
    if validator == "additionalProperties" and isinstance(value, dict):
        known = list(schema.get("properties", {}))
        extras = [k for k in value if k not in known]
        removed = schema.get("x-removed", {})  # fields no longer accepted: say why and what instead
        return [
            doc.problem((*path, k), f"'{k}' in {where}: {removed[k]}", code="removed-field", key=True)
            if k in removed else
            doc.problem((*path, k), f"unknown field '{k}' in {where}{did_you_mean(k, known)}; "
                                    f"known fields: {', '.join(known)}", code="unknown-field", key=True)
            for k in extras
        ]
    if validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        return [doc.problem(path, f"{where} is missing the required field '{missing}'", code="missing-field",
                            key=True)]
    if validator == "type":
        expected = schema.get("type")
        expected_text = " or ".join(expected) if isinstance(expected, list) else str(expected)
        expected_text = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
                         "boolean": "true or false"}.get(expected_text, expected_text)
        message = f"{where} must be {expected_text}, not {_describe(value)}"
        if expected == "string":
            message += _quote_hint(value)
        return [doc.problem(path, message, code="wrong-type")]
    if validator == "oneOf":
        # the branch for the value's own type says what is wrong with it (a mapping: the object branch)
        inner = [e for e in error.context or () if e.validator != "type"]
        if inner:
            return [p for e in inner for p in _problems(doc, e, tuple(e.absolute_path))]
        return [doc.problem(path, f"{where} must be {hint or 'one of the forms the schema allows'}, not "
                                  f"{_describe(value)}", code="wrong-type")]
    if validator == "propertyNames":
        return [doc.problem(path, f"{where}: {error.message}", code="invalid-value")]
    if validator == "pattern" and error.relative_schema_path and "propertyNames" in error.relative_schema_path:
        return [doc.problem((*path, value), f"invalid key {value!r} in {where}"
                            + (f": use {hint}" if hint else ""), code="invalid-value", key=True)]
    if validator == "pattern":
        return [doc.problem(path, f"{where} {value!r} is not valid" + (f": use {hint}" if hint else ""),
                            code="invalid-value")]
    if validator == "enum":
        options = ", ".join(map(str, schema.get("enum", [])))
        return [doc.problem(path, f"{where} {value!r} is not one of: {options}"
                            + did_you_mean(str(value), map(str, schema.get("enum", []))), code="invalid-value")]
    if validator in ("minProperties", "maxProperties") and hint:
        return [doc.problem(path, f"{where} needs {hint}", code="invalid-value")]
    if validator == "minimum":
        return [doc.problem(path, f"{where} must be at least {schema.get('minimum')}, not {value!r}",
                            code="invalid-value")]
    if validator == "maximum":
        return [doc.problem(path, f"{where} must be at most {schema.get('maximum')}, not {value!r}",
                            code="invalid-value")]
    if validator == "minItems":
        return [doc.problem(path, f"{where} must have at least {schema.get('minItems')} item(s)",
                            code="invalid-value")]
    if validator == "minLength":
        return [doc.problem(path, f"{where} must not be empty", code="invalid-value")]
    if validator == "maxLength":
        return [doc.problem(path, f"{where} is longer than {schema.get('maxLength')} characters",
                            code="invalid-value")]
    if validator == "uniqueItems":
        return [doc.problem(path, f"{where} lists the same value more than once", code="duplicate-name")]
    return [doc.problem(path, f"{where}: {error.message}", code="invalid")]


def _name(path: PathKey) -> str:
    if not path:
        return "the document"
    last = path[-1]
    if isinstance(last, int):
        return f"item {last} of {_name(path[:-1])}"
    return str(last)


def _describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _quote_hint(value: Any) -> str:
    if isinstance(value, (bool, int, float, datetime.date)):
        return "; YAML reads it as a non-string: put it in quotes"
    return ""
