"""What each environment applies: its own last good revision, its own newest rejected one.

A Git revision is judged environment by environment (:mod:`.evaluation`): a problem in ``dev/``
rejects dev only, staging and prod apply their part of the same commit. So each environment keeps
the revision it applied last (its part of that revision's tree and the digests its tags resolved to
then) and the newest revision rejected for it (every problem at file:line). The planner and the
tracker keep working on one :class:`~model.types.ManifestTree`: the *composite* tree, each
environment's part taken from its own applied revision (:meth:`EnvRevisions.rebuild`).

Errors are attributed to environments by :func:`attribute`: an explicit ``env`` key, else the file's
first folder (``dev/apps/a.yaml`` is dev's); an error about no environment's file (the tree as a
whole, a commit signature checked for every environment) rejects every environment the commit
changes. The manifest model has no file shared between environments (each reads only
``<env>/environment.yaml`` and ``<env>/apps/*.yaml``); what one environment references of another
(``promotion.from``) is checked in the referencing environment's file, so it rejects that one only.

Stored in the state store per environment (``applied_envs``, ``rejected_envs``, ``env_digests``); the
single records of older reconcilers (``applied``, ``rejected``) are read once and migrated, and the
summary ``applied`` is still written (what is newest anywhere) so an older reader keeps working.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from model.types import Application, ManifestTree
from reconciler.controller.revisions import Rejected
from reconciler.controller.state import StateStore

log = logging.getLogger("driftless.reconciler")

APPLIED_KEY, REJECTED_KEY, DIGESTS_KEY = "applied_envs", "rejected_envs", "env_digests"
LEGACY_APPLIED, LEGACY_REJECTED = "applied", "rejected"  # one record for every environment (before per-env)
# what a push to the registry, a change of --secrets-file (a secret added or its scope widened), a
# reconciler restarted with the --outbound-allow a URL needed, or `driftless sign` of the digest fixes
RETRYABLE = frozenset({"unknown-image", "unknown-secret", "secret-out-of-scope", "outbound-not-allowed",
                       "unsigned-digest"})


def folder_of(file: str | None, envs: Collection[str]) -> str | None:
    """The environment whose folder holds ``file`` (relative to the manifests root), or None."""
    if not file:
        return None
    first = file.replace("\\", "/").lstrip("/").split("/", 1)[0]
    return first if first in envs else None


def attribute(errors: Iterable[dict[str, Any]], *, envs: Collection[str],
              touched: Collection[str]) -> dict[str, list[dict[str, Any]]]:
    """Each error to the environment(s) it rejects: its ``env`` key, else the folder its file is in,
    else (no file of an environment: the tree as a whole) every environment in ``touched``, or every
    one of ``envs`` when the commit touches none (an error is never dropped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        env = error.get("env") or folder_of(error.get("file"), envs)
        targets = [env] if env else sorted(touched) or sorted(envs)
        for target in targets:
            out.setdefault(target, []).append(error)
    return out


def env_images(tree: ManifestTree, env: str) -> set[str]:
    return {c.image for app in tree.applications.get(env, {}).values() for c in app.components}


def retryable(rejected: Rejected | None, revision: str | None) -> bool:
    """Rejected at ``revision`` only for what a push to the registry (or --secrets-file) can fix."""
    return bool(rejected and rejected.revision == revision and rejected.errors
                and all(e.get("code") in RETRYABLE for e in rejected.errors))


def _part(tree: ManifestTree, env: str) -> tuple[dict[str, Any], dict[str, Application],
                                                  dict[str, tuple[str, int, int]]]:
    prefixes = (f"{env}:", f"{env}/")
    return (tree.environments.get(env), tree.applications.get(env, {}),  # type: ignore[return-value]
            {k: v for k, v in tree.locations.items() if k.startswith(prefixes)})


def _pinned(apps: Mapping[str, Application], pins: Mapping[str, str]) -> dict[str, Application]:
    """``apps`` with each image of ``pins`` written as ``image@digest`` (see :meth:`EnvRevisions.rebuild`)."""
    out = {}
    for name, app in apps.items():
        comps = tuple(dataclasses.replace(c, image=f"{c.image}@{pins[c.image]}") if c.image in pins else c
                      for c in app.components)
        out[name] = dataclasses.replace(app, components=comps) if comps != app.components else app
    return out


class EnvRevisions:
    """Per environment: what is applied (and from which tree), what was rejected; the composite."""

    def __init__(self) -> None:
        self.applied: dict[str, dict[str, Any]] = {}  # env -> {"revision","message","author","appliedAt"}
        self.rejected: dict[str, Rejected] = {}
        self.digests: dict[str, dict[str, str]] = {}  # env -> image as written -> digest, resolved at its apply
        self.parts: dict[str, ManifestTree] = {}  # env -> the loaded tree of its applied revision
        self.tree: ManifestTree | None = None  # the composite (None until something is applied and loaded)
        self.merged: dict[str, str] = {}  # image -> digest over every environment (the composite's)
        self.unmigrated: str | None = None  # an older reconciler's applied revision not readable yet

    # ------------------------------------------------------------------ questions
    def missing_parts(self) -> dict[str, str]:
        """Environments applied whose tree is not loaded (a restart that could not read Git): env -> revision."""
        missing = {env: a["revision"] for env, a in self.applied.items() if env not in self.parts}
        if self.unmigrated:
            missing["*"] = self.unmigrated
        return missing

    def applied_revision(self, env: str) -> str | None:
        return (self.applied.get(env) or {}).get("revision")

    def summary_applied(self) -> dict[str, Any] | None:
        """The newest revision applied to any environment (the single ``applied`` of older answers)."""
        if not self.applied:
            return None
        newest = max(self.applied.values(), key=lambda a: (a.get("appliedAt") or 0.0))
        return {k: newest[k] for k in ("revision", "message", "author", "appliedAt") if k in newest}

    def summary_rejected(self) -> Rejected | None:
        """The newest rejected revision with the problems of every environment it was rejected for
        (each error naming its ``env``); None when no environment has a rejection."""
        if not self.rejected:
            return None
        newest = max(self.rejected.values(), key=lambda r: r.since)
        envs = sorted(e for e, r in self.rejected.items() if r.revision == newest.revision)
        errors = [{**err, "env": env} for env in envs for err in self.rejected[env].errors]
        return Rejected(revision=newest.revision, errors=errors, since=min(self.rejected[e].since for e in envs),
                        message=newest.message, author=newest.author)

    def rejected_envs(self, revision: str) -> list[str]:
        return sorted(e for e, r in self.rejected.items() if r.revision == revision)

    def env_json(self, env: str) -> dict[str, Any]:
        """The API's per-environment revision fields."""
        applied, rejected = self.applied.get(env), self.rejected.get(env)
        return {"applied": dict(applied) if applied else None, "rejected": rejected.to_json() if rejected else None}

    # ------------------------------------------------------------------ changes
    def rebuild(self) -> None:
        """The composite tree and digests from each environment's part. An image written the same in
        two environments but resolved to different digests (its tag moved between their applies) is
        pinned as ``image@digest`` in the older one: each runs what its own apply resolved."""
        tree = ManifestTree()
        merged: dict[str, str] = {}
        newest_first = sorted(self.parts, key=lambda e: -(self.applied.get(e, {}).get("appliedAt") or 0.0))
        for env in newest_first:
            for image, digest in self.digests.get(env, {}).items():
                merged.setdefault(image, digest)
        for env in sorted(self.parts):
            environment, apps, locations = _part(self.parts[env], env)
            if environment is not None:
                tree.environments[env] = environment  # type: ignore[assignment]
            pins = {i: d for i, d in self.digests.get(env, {}).items() if merged.get(i) != d}
            tree.applications[env] = _pinned(apps, pins) if pins else dict(apps)
            tree.locations.update(locations)
        revisions = {a["revision"] for a in self.applied.values()}
        tree.revision = next(iter(revisions)) if len(revisions) == 1 else None
        self.tree = tree if self.parts else None
        self.merged = merged

    def set_applied(self, env: str, *, record: dict[str, Any], tree: ManifestTree, digests: dict[str, str]) -> None:
        self.applied[env] = record
        self.parts[env] = tree
        self.digests[env] = digests
        self.rejected.pop(env, None)

    def remove(self, env: str) -> None:
        """The environment's folder is gone from Git (validly): nothing of it is applied any more."""
        for d in (self.applied, self.parts, self.digests, self.rejected):
            d.pop(env, None)

    # ------------------------------------------------------------------ the store
    def save(self, store: StateStore) -> None:
        store.put(APPLIED_KEY, self.applied)
        store.put(REJECTED_KEY, {e: r.to_json() for e, r in self.rejected.items()})
        store.put(DIGESTS_KEY, self.digests)
        store.put(LEGACY_APPLIED, self.summary_applied())
        rejected = self.summary_rejected()
        store.put(LEGACY_REJECTED, rejected.to_json() if rejected else None)

    def read(self, store: StateStore, *, load: Callable[[str], ManifestTree | None], write: bool = True) -> None:
        """Read the per-environment records (``load``: a revision's tree, None when it cannot be
        read now); the single records of an older reconciler are migrated: every environment of
        the applied revision applied at it (and rejected at its rejected revision), saved unless
        ``write`` is false (a follower writes nothing)."""
        applied = store.get(APPLIED_KEY)
        trees: dict[str, ManifestTree | None] = {}

        def tree_of(revision: str) -> ManifestTree | None:
            if revision not in trees:
                trees[revision] = load(revision)
            return trees[revision]

        if applied is None:
            self._migrate(store, tree_of, write=write)
        else:
            self.applied = dict(applied)
            self.rejected = {e: Rejected(**r) for e, r in (store.get(REJECTED_KEY) or {}).items()}
            self.digests = {e: dict(d) for e, d in (store.get(DIGESTS_KEY) or {}).items()}
        self.parts = {}
        for env, record in self.applied.items():
            tree = tree_of(record["revision"])
            if tree is not None:
                self.parts[env] = tree
        self.rebuild()

    def load_missing(self, store: StateStore, *, load: Callable[[str], ManifestTree | None]) -> None:
        """Load the applied trees a restart could not (and finish a migration that needed one)."""
        if self.unmigrated:
            self._migrate(store, load, write=True)
        for env, revision in self.missing_parts().items():
            tree = load(revision) if env != "*" else None
            if tree is not None:
                self.parts[env] = tree
        self.rebuild()

    def adopt(self, other: EnvRevisions) -> None:
        """Take ``other``'s records (a follower's reading of the shared state); the composite is kept
        as it is when what is applied did not change."""
        same = other.applied == self.applied and other.digests == self.digests and not other.missing_parts() \
            and not self.missing_parts()
        self.rejected = other.rejected
        self.unmigrated = other.unmigrated
        if same:
            return
        kept = False
        for env, revision in other.missing_parts().items():  # not readable now: the tree known before stays
            if env in self.parts and self.applied_revision(env) == revision:
                other.parts[env] = self.parts[env]
                kept = True
        if kept:
            other.rebuild()
        self.applied, self.digests, self.parts = other.applied, other.digests, other.parts
        self.tree, self.merged = other.tree, other.merged

    def _migrate(self, store: StateStore, tree_of: Callable[[str], ManifestTree | None], *, write: bool) -> None:
        old, old_rejected = store.get(LEGACY_APPLIED), store.get(LEGACY_REJECTED)
        self.applied, self.rejected, self.digests = {}, {}, {}
        if not old and not old_rejected:
            return  # a new reconciler: nothing to migrate
        tree = tree_of(old["revision"]) if old else None
        if old and tree is None:  # tried again at the next reconcile; nothing is planned meanwhile
            self.unmigrated = old["revision"]
            return
        self.unmigrated = None
        envs = sorted(set(tree.environments) | set(tree.applications)) if tree is not None else []
        tags = store.tags(old["revision"]) if old else {}
        for env in envs:
            self.applied[env] = dict(old)
            self.digests[env] = {i: d for i, d in tags.items() if i in env_images(tree, env)}  # type: ignore[arg-type]
        if old_rejected:
            for env in envs or [""]:
                self.rejected[env] = Rejected(**old_rejected)
        if write:
            log.info("event=state-migrated applied=%s environments=%s", (old or {}).get("revision", "")[:12],
                     ",".join(envs))
            self.save(store)
