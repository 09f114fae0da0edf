"""YAML text -> plain Python documents that remember where every key and value was written.

PyYAML's composer (libyaml, in C: ~30x faster than a pure-Python round-trip loader) gives a node
tree with a start mark on every node; we build plain dicts/lists/scalars from it (so jsonschema and
the converters see ordinary values) and keep 1-based positions in a side table keyed by the path of
each node. Duplicate keys, merge keys (``<<``), aliases and custom tags are handled here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from model.types import Problem

PathKey = tuple[str | int, ...]

# the composer recurses per nesting level; deep "[[[[..." is refused up front, with its position
MAX_FLOW_DEPTH = 100
# aliases can make a small file expand enormously ("billion laughs"); refuse past this many nodes
MAX_NODES = 100_000
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_SCALARS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")
)
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


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
    """("spec", "components", 0, "image") -> "spec.components[0].image"; odd keys are quoted:
    ("metadata", "labels", "example.com/tier") -> 'metadata.labels["example.com/tier"]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += "[" + json.dumps(part) + "]"
        else:
            out += f".{part}" if out else part
    return out


class _TooBig(Exception):
    pass


class _SelfReference(Exception):
    pass


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: tuple[int, int], second: tuple[int, int]) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _Converter:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()
        self.scalars = SafeConstructor()

    def convert(self, node: Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"the document expands to more than {MAX_NODES} nodes (aliases?)")
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self.active:
            raise _SelfReference("the document contains itself through an alias: YAML manifests must be trees")
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._map(node, path)
            return [self._item(child, path, i) for i, child in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _item(self, node: Node, path: PathKey, index: int) -> Any:
        child = (*path, index)
        self.doc.values[child] = _mark(node)
        return self.convert(node, child)

    def _map(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                merged.extend(n for n in sources if isinstance(n, MappingNode))
                continue
            key = self._key(key_node)
            child = (*path, key)
            if key in out:
                raise _DuplicateKey(key, self.doc.keys[child], _mark(key_node))
            self.doc.keys[child] = _mark(key_node)
            self.doc.values[child] = _mark(value_node)
            out[key] = self.convert(value_node, child)
        for source in merged:  # explicit keys win over merged ones, earlier merges over later ones
            for key, value in self._map(source, path).items():
                out.setdefault(key, value)
        return out

    def _key(self, node: Node) -> str:
        if isinstance(node, ScalarNode):
            value = self._scalar(node)
            return value if isinstance(value, str) else str(node.value)
        return "<a mapping>" if isinstance(node, MappingNode) else "<a list>"  # "? [a, b]: ..." keys

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag not in _STANDARD_SCALARS:
            return str(node.value)  # custom tags ("!foo bar") keep their text
        try:
            return self.scalars.construct_object(node)
        except (ConstructorError, ValueError):
            return str(node.value)


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def parse_documents(text: str, *, file: str) -> tuple[list[Document], list[Problem]]:
    """All documents of ``text`` (empty ones dropped), or the problem that stopped the parser."""
    docs: list[Document] = []
    problems: list[Problem] = []
    too_deep = _flow_too_deep(text)
    if too_deep is not None:
        line, column = _line_col(text, too_deep)
        return [], [Problem(level="error", file=file, line=line, column=column, path="", code="yaml-syntax",
                            message=f"YAML is nested more than {MAX_FLOW_DEPTH} levels deep here: flatten it")]
    stream: Iterator[Node] = iter(yaml.compose_all(text, Loader=_LOADER))
    index = -1
    while True:
        index += 1
        try:
            node = next(stream)
        except StopIteration:
            break
        except yaml.reader.ReaderError as exc:
            line, column = _line_col(text, exc.position)
            problems.append(Problem(
                level="error", file=file, line=line, column=column, path="", code="yaml-syntax",
                message=f"YAML may not contain the control character {_codepoint(exc.character)}; remove it",
            ))
            break
        except yaml.MarkedYAMLError as exc:
            problems.append(_syntax_problem(exc, file=file))
            break
        except Exception as exc:  # libyaml raises a few plain errors on odd input; report, never crash
            problems.append(_unlocated(file, f"YAML could not be read: {_one_line(str(exc))}", code="yaml-syntax"))
            break
        if isinstance(node, ScalarNode) and node.tag.endswith(":null") and node.value in ("", "~"):
            continue  # an empty document (a stray "---")
        doc = Document(file=file, data=None, index=index, start=_mark(node))
        try:
            doc.data = _Converter(doc).convert(node, ())
        except _DuplicateKey as exc:
            problems.append(Problem(
                level="error", file=file, line=exc.second[0], column=exc.second[1], path="", code="duplicate-key",
                message=f"duplicate key '{exc.key}' (first at line {exc.first[0]}): each key may appear once "
                        "in a mapping; remove or merge one"))
            continue
        except _TooBig as exc:
            problems.append(_unlocated(file, f"{exc}; refused", code="too-large", line=doc.start[0]))
            continue
        except _SelfReference as exc:
            problems.append(_unlocated(file, str(exc), code="yaml-syntax", line=doc.start[0]))
            continue
        except RecursionError:
            problems.append(_unlocated(file, "YAML is nested too deeply to read", code="yaml-syntax",
                                       line=doc.start[0]))
            continue
        except Exception as exc:  # an odd node shape the composer accepted; report it, never crash
            problems.append(_unlocated(file, f"YAML could not be read: {_one_line(str(exc))}", code="yaml-syntax",
                                       line=doc.start[0]))
            continue
        docs.append(doc)
    return docs, problems


def _syntax_problem(exc: yaml.MarkedYAMLError, *, file: str) -> Problem:
    """At the line where libyaml noticed the problem, saying where the broken construct (an unclosed
    bracket or quote, often lines earlier) starts: libyaml's context mark."""
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    context = _one_line(exc.context) if exc.context else ""
    start = exc.context_mark
    if context and start is not None and (start.line + 1, start.column + 1) != (line, column):
        context += f" that starts at line {start.line + 1}, column {start.column + 1}"
    parts = [p for p in (context, _one_line(exc.problem or "")) if p]
    what = ": ".join(parts) or "invalid YAML"
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
