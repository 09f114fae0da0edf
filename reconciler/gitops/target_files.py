"""The target environment's files a promotion reads and rewrites: where the Application is declared
and where each component's ``image:`` value is written (so only those bytes change), kept comments
and all (ruamel.yaml round-trip)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from shared.errors import Refused
from shared.reference import ReferenceError, parse


def yaml_loader() -> YAML:
    """A new round-trip loader per use: ruamel.yaml instances are not thread-safe (the API runs
    promotions in threads)."""
    return YAML(typ="rt")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocatedApp:
    file: str  # relative to the repository root
    text: str
    images: tuple[tuple[str, str], ...]  # (component, image as written)
    spans: tuple[tuple[int, int, str], ...] = field(default=())  # (start, end, text) of each image scalar


def app_files(root: Path, *, subdir: str, env: str) -> list[Path]:
    apps = root / subdir / env / "apps"
    return (
        sorted(p for p in apps.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if apps.is_dir()
        else []
    )


def application_name(text: str) -> list[str]:
    """Names of the Application documents in ``text`` (a file may hold several)."""
    names = []
    try:
        for doc in yaml_loader().load_all(text):
            if isinstance(doc, Mapping) and doc.get("kind") == "Application":
                meta = doc.get("metadata")
                if isinstance(meta, Mapping) and meta.get("name"):
                    names.append(str(meta["name"]))
    except YAMLError:
        return []
    return names


def find_app(root: Path, *, subdir: str, env: str, app: str) -> LocatedApp:
    """The target Application: its file, and where each component's ``image:`` value is written."""
    for path in app_files(root, subdir=subdir, env=env):
        text = path.read_bytes().decode("utf-8")
        if app not in application_name(text):
            continue
        rel = str(path.relative_to(root))
        docs = list(yaml_loader().load_all(text))
        if len(docs) != 1:
            raise Refused(
                f"{rel} holds {len(docs)} YAML documents; promotion rewrites files with one Application",
                hint=f"move {app} into a file of its own",
            )
        return _locate_images(rel, text, docs[0])
    raise Refused(
        f"application {app} not found in {subdir}/{env}/apps/",
        hint=f"declare {app} in {env} first; promotion only updates images of an existing application",
    )


def _locate_images(rel: str, text: str, doc: Any) -> LocatedApp:
    line_starts = [0]
    for m in re.finditer("\n", text):
        line_starts.append(m.end())
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    components = spec.get("components") if isinstance(spec, Mapping) else None
    if not isinstance(components, list) or not components:
        raise Refused(f"{rel} declares no components under spec.components")
    images: list[tuple[str, str]] = []
    spans: list[tuple[int, int, str]] = []
    for i, comp in enumerate(components):
        if (
            not isinstance(comp, CommentedMap)
            or not isinstance(comp.get("image"), str)
            or not comp.get("name")
        ):
            raise Refused(f"{rel}: spec.components[{i}] needs a name and an image")
        image = comp["image"]
        try:
            parse(image)
        except ReferenceError as exc:
            raise Refused(f"{rel}: spec.components[{i}].image: {exc}") from None
        line, col = comp.lc.value("image")
        start = line_starts[line] + col
        end = _scalar_end(text, start, image)
        if end is None:
            raise Refused(
                f"{rel}:{line + 1}:{col + 1}: the image of {comp['name']} is written in a form promotion cannot "
                "rewrite in place (escapes or a multi-line scalar)",
                hint="write it on one line, plain or quoted",
            )
        images.append((str(comp["name"]), image))
        spans.append((start, end, text[start:end]))
    return LocatedApp(file=rel, text=text, images=tuple(images), spans=tuple(spans))


def _scalar_end(text: str, start: int, value: str) -> int | None:
    """End offset of the scalar ``value`` written at ``start`` (plain, 'single' or "double" quoted)."""
    quote = text[start : start + 1]
    if quote in ("'", '"'):
        end = start + 1 + len(value) + 1
        return end if text[start:end] == f"{quote}{value}{quote}" else None
    end = start + len(value)
    return end if text[start:end] == value else None
