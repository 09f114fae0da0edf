"""What the controller knows of revisions: the one applied and the newest one rejected (with every
problem as file:line:column), in the JSON shapes the API and the store use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.types import ManifestTree, SecretRef


@dataclass(slots=True, kw_only=True)
class Rejected:
    revision: str
    errors: list[dict[str, Any]]  # Problem.to_json() plus "text": "file:line:col: message"
    since: float
    message: str = ""
    author: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "errors": self.errors, "since": self.since,
                "message": self.message, "author": self.author}

    def summary(self) -> str:
        errors = "; ".join(e["text"] for e in self.errors[:5])
        return f"revision {self.revision[:12]} rejected: {errors}"


def error_json(file: str, line: int, message: str, *, code: str = "invalid", column: int = 1) -> dict[str, Any]:
    where = f"{file}:{line}:{column}: " if file else ""
    return {"level": "error", "file": file, "line": line, "column": column if line else 0, "path": "",
            "message": message, "code": code, "text": f"{where}{message}"}


def problem_json(p: Any) -> dict[str, Any]:
    d = dict(p.to_json())
    d["text"] = str(p)
    return d


def locate_image(tree: ManifestTree, image: str, message: str, *, env: str | None = None) -> dict[str, Any]:
    """An unknown-image error at the file:line of ``image`` in the tree (in ``env`` when given)."""
    where = tree.applications.items() if env is None else [(env, tree.applications.get(env, {}))]
    for name, apps in where:
        for app in apps.values():
            for i, comp in enumerate(app.components):
                if comp.image == image:
                    path = f"spec.components[{i}].image"
                    file, line, column = tree.location(env=name, app=app.name, path=path)
                    return error_json(file, line, f"{message} at {path}", code="unknown-image", column=column)
    return {**error_json("", 0, message, code="unknown-image"), **({"env": env} if env else {})}


def env_changed(old: ManifestTree, new: ManifestTree, env: str) -> bool:
    return old.environments.get(env) != new.environments.get(env) or \
        old.applications.get(env) != new.applications.get(env)


def secret_refs(tree: ManifestTree) -> frozenset[str]:
    """The names of every secret of --secrets-file the tree's config values reference (not age values)."""
    return frozenset(v.name for apps in tree.applications.values() for app in apps.values()
                     for comp in app.components for v in comp.config.values()
                     if isinstance(v, SecretRef) and v.age is None)


def locate_secrets(tree: ManifestTree, known: frozenset[str]) -> list[dict[str, Any]]:
    """An unknown-secret error at the file:line of each reference to a secret not in ``known``."""
    out: list[dict[str, Any]] = []
    for env, apps in sorted(tree.applications.items()):
        for _, app in sorted(apps.items()):
            for i, comp in enumerate(app.components):
                for key, value in comp.config.items():
                    if isinstance(value, SecretRef) and value.age is None and value.name not in known:
                        path = f"spec.components[{i}].config.{key}"
                        file, line, column = tree.location(env=env, app=app.name, path=path)
                        out.append(error_json(file, line, f"secret {value.name!r} is not in the reconciler's "
                                                          f"--secrets-file at {path}", code="unknown-secret",
                                              column=column))
    return out
