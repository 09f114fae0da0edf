"""YAML text -> plain Python documents that remember where every key and value was written.

ruamel.yaml's round-trip loader keeps line/column on maps and sequences; we copy the data into
plain dicts/lists/scalars (so jsonschema and the converters see ordinary values) and keep the
positions in a side table keyed by the path of each node.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from reconciler.model.types import Problem

PathKey = tuple[str | int, ...]

# ruamel recurses per nesting level; deep "[[[[..." costs seconds before Python's recursion limit stops it
MAX_FLOW_DEPTH = 100
# aliases can make a small file expand enormously ("billion laughs"); refuse past this many nodes
MAX_NODES = 100_000


@dataclass(slots=True)
class Document:
    """One YAML document: its plain data and the 1-based positions of its nodes."""

    file: str
    data: Any
    index: int  # 0-based position of the document in a multi-document file
    start: tuple[int, int] = (1, 1)
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """Where ``path`` was written (its key when ``key``), else its nearest located ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        probe = path
        while probe:
            if probe in self.values:
                return self.values[probe]
            if probe in self.keys:
                return self.keys[probe]
            probe = probe[:-1]
        return self.start

    def problem(
        self, path: PathKey, message: str, *, code: str, level: str = "error", key: bool = False
    ) -> Problem:
        line, column = self.position(path, key=key)
        return Problem(
            level=level,  # type: ignore[arg-type]
            file=self.file,
            line=line,
            column=column,
            path=format_path(path),
            message=message,
            code=code,
        )


def format_path(path: PathKey) -> str:
    """("spec", "components", 0, "image") -> "spec.components[0].image"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _TooBig(Exception):
    pass


class _Converter:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()

    def convert(self, node: Any, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"the document expands to more than {MAX_NODES} nodes (aliases?)")
        if isinstance(node, (CommentedMap, CommentedSeq)):
            if id(node) in self.active:
                raise _TooBig("the document refers to itself through an alias")
            self.active.add(id(node))
            try:
                return self._map(node, path) if isinstance(node, CommentedMap) else self._seq(node, path)
            finally:
                self.active.discard(id(node))
        return _scalar(node)

    def _map(self, node: CommentedMap, path: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        data = node.lc.data or {}
        for key, value in node.items():
            name = key if isinstance(key, str) else str(_scalar(key))
            child = (*path, name)
            where = data.get(key)
            if where is not None:
                self.doc.keys[child] = (where[0] + 1, where[1] + 1)
                self.doc.values[child] = (where[2] + 1, where[3] + 1)
            out[name] = self.convert(value, child)
        return out

    def _seq(self, node: CommentedSeq, path: PathKey) -> list[Any]:
        out: list[Any] = []
        data = node.lc.data or {}
        for i, value in enumerate(node):
            child = (*path, i)
            where = data.get(i)
            if where is not None:
                self.doc.values[child] = (where[0] + 1, where[1] + 1)
            out.append(self.convert(value, child))
        return out


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses -> plain str/int/float/bool/None; dates stay dates (schema says "quote it")."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value
    if hasattr(value, "value"):  # TaggedScalar from a custom tag such as "!foo bar": keep the text
        return str(value.value)
    return str(value)


def _new_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def parse_documents(text: str, *, file: str) -> tuple[list[Document], list[Problem]]:
    """All documents of ``text`` (empty ones dropped), or the problem that stopped the parser."""
    docs: list[Document] = []
    problems: list[Problem] = []
    too_deep = _flow_too_deep(text)
    if too_deep is not None:
        line, column = _line_col(text, too_deep)
        return [], [Problem(level="error", file=file, line=line, column=column, path="", code="yaml-syntax",
                            message=f"YAML is nested more than {MAX_FLOW_DEPTH} levels deep here: flatten it")]
    stream: Iterator[Any] = iter(_new_yaml().load_all(text))
    index = 0
    while True:
        try:
            node = next(stream)
        except StopIteration:
            break
        except MarkedYAMLError as exc:
            problems.append(_syntax_problem(exc, file=file))
            break
        except ReaderError as exc:
            line, column = _line_col(text, exc.position)
            problems.append(Problem(
                level="error", file=file, line=line, column=column, path="", code="yaml-syntax",
                message=f"YAML may not contain the control character {_codepoint(exc.character)}; remove it",
            ))
            break
        except YAMLError as exc:
            problems.append(_unlocated(file, f"YAML error: {_one_line(str(exc))}", code="yaml-syntax"))
            break
        except RecursionError:
            problems.append(_unlocated(file, "YAML is nested too deeply to read", code="yaml-syntax"))
            break
        except Exception as exc:  # ruamel raises a few plain errors on odd input; report, never crash
            problems.append(_unlocated(file, f"YAML could not be read: {_one_line(str(exc))}", code="yaml-syntax"))
            break
        if node is None:
            index += 1
            continue
        doc = Document(file=file, data=None, index=index)
        if isinstance(node, (CommentedMap, CommentedSeq)) and node.lc.line is not None:
            doc.start = (node.lc.line + 1, (node.lc.col or 0) + 1)
        try:
            doc.data = _Converter(doc).convert(node, ())
        except _TooBig as exc:
            problems.append(_unlocated(file, f"{exc}; refused", code="too-large", line=doc.start[0]))
            index += 1
            continue
        except RecursionError:
            problems.append(_unlocated(file, "YAML is nested too deeply to read", code="yaml-syntax"))
            index += 1
            continue
        except Exception as exc:  # an odd node shape ruamel accepted; report it, never crash
            problems.append(_unlocated(file, f"YAML could not be read: {_one_line(str(exc))}", code="yaml-syntax",
                                       line=doc.start[0]))
            index += 1
            continue
        docs.append(doc)
        index += 1
    return docs, problems


def _syntax_problem(exc: MarkedYAMLError, *, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    parts = [p for p in (exc.context, exc.problem) if p]
    what = "; ".join(_one_line(p) for p in parts) or "invalid YAML"
    if "duplicate key" in what or type(exc).__name__ == "DuplicateKeyError":
        message = f"duplicate key: {what}; each key may appear once in a mapping"
        return Problem(level="error", file=file, line=line, column=column, path="", message=message,
                       code="duplicate-key")
    return Problem(level="error", file=file, line=line, column=column, path="",
                   message=f"YAML syntax error: {what}", code="yaml-syntax")


def _unlocated(file: str, message: str, *, code: str, line: int = 1) -> Problem:
    return Problem(level="error", file=file, line=line, column=1, path="", message=message, code=code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _codepoint(character: object) -> str:
    code = character if isinstance(character, int) else ord(str(character)[:1] or "\0")
    return f"U+{code:04X}"


def _flow_too_deep(text: str) -> int | None:
    """Offset where "[" / "{" nesting passes MAX_FLOW_DEPTH, outside quotes and comments (a fast pre-check)."""
    depth = 0
    quote = ""
    comment = False
    previous = "\n"
    for offset, char in enumerate(text):
        if comment:
            comment = char != "\n"
        elif quote:
            if char == quote:
                quote = ""
        elif char in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return offset
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char in "'\"" and previous in " \t\n[{,:":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        previous = char
    return None
