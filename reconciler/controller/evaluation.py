"""Judging a Git revision environment by environment, and applying it to the environments it is valid for.

Each environment applies the newest revision whose own part is valid: its folder and what it
references. :meth:`Evaluator.load` loads the revision and runs every check that can reject it, each
problem at file:line; :func:`~.env_revisions.attribute` gives each problem to the environment whose
folder holds the file (a check that knows better sets ``env``). :meth:`Evaluator.resolve` then
resolves the tags of the environments still valid (an unknown image rejects the environments that
name it), runs the registry's component checks on them, and applies or rejects each environment
(:class:`~.env_revisions.EnvRevisions`). So a schema error in ``dev/`` rejects dev, while staging and
prod apply their part of the same commit; the next commit fixing dev applies dev.

Which environments a revision is judged for: those not applied at it yet and not rejected at it,
plus those rejected at it only for an image the registry does not hold yet or a secret not in
--secrets-file (a push, or adding the secret, fixes them: tried again at each fetch).

Commit signatures (``--allowed-signers [ENV=]FILE``) are checked per environment the commit changes
(its folder differs from the one that environment applied): a commit changing ``prod/`` must be
signed by a key of prod's file; dev's key does not do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.types import ManifestTree
from reconciler.controller.boundaries import check_boundaries
from reconciler.controller.env_revisions import EnvRevisions, attribute, env_images, folder_of, retryable
from reconciler.controller.events import EventLog
from reconciler.controller.git_source import CommitInfo, GitError, GitSource
from reconciler.controller.notify import commit_event
from reconciler.controller.outbound import OutboundAllowList
from reconciler.controller.revisions import (
    Rejected,
    env_changed,
    error_json,
    locate_image,
    locate_secrets,
    problem_json,
)
from reconciler.controller.secrets import SecretStore
from reconciler.controller.signing_policy import SigningPolicy
from reconciler.controller.state import StateStore
from reconciler.settings import Settings
from shared import registry_client
from shared import tags as tags_mod
from shared.errors import NotReachable
from shared.reference import parse
from shared.units import seconds_from_env

log = logging.getLogger("driftless.reconciler")

REGISTRY_TIMEOUT = seconds_from_env("DRIFTLESS_REGISTRY_TIMEOUT", 5.0)  # one registry request (connect, each read)
RESOLVE_DEADLINE = 6 * REGISTRY_TIMEOUT  # all the tags of a revision, resolved concurrently
RESOLVE_WORKERS = 8  # registry requests in flight at once


class Transient(Exception):
    """Git or the registry did not answer; the reconcile is retried with backoff."""


@dataclass(slots=True, kw_only=True)
class Evaluation:
    """One revision being judged: its tree, the environments judged, the problems found so far."""

    head: CommitInfo
    tree: ManifestTree
    candidates: set[str]  # the environments this revision is judged for
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # env -> its problems


class Evaluator:
    def __init__(self, *, settings: Settings, git: GitSource, secrets: SecretStore, store: StateStore,
                 event: EventLog, envs: EnvRevisions, registry_host: str,
                 new_rejection: Callable[[], None], outbound: OutboundAllowList,
                 signatures: SigningPolicy) -> None:
        self.settings = settings
        self.git = git
        self.secrets = secrets
        self.store = store
        self.event = event
        self.envs = envs
        self.registry_host = registry_host
        self.outbound = outbound  # --outbound-allow: the URLs Git may name
        self.signatures = signatures  # --signature-policy: the digests each environment accepts
        self._new_rejection = new_rejection  # a new revision waiting for an image starts retrying soon
        self._resolver = concurrent.futures.ThreadPoolExecutor(max_workers=RESOLVE_WORKERS,
                                                               thread_name_prefix="resolve-tags")
        self._component_api: bool | None = None
        self.judged: str | None = None  # the revision every environment was judged for (until a retry)

    def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ which environments
    def _pending(self, env: str, revision: str, *, retry: bool) -> bool:
        if self.envs.applied_revision(env) == revision:
            return False
        rejected = self.envs.rejected.get(env)
        if rejected is not None and rejected.revision == revision:
            return retry and retryable(rejected, revision)
        return True

    def waiting(self, revision: str | None) -> list[str]:
        """The environments rejected at ``revision`` only for an image (a push to the registry fixes it)."""
        return sorted(e for e, r in self.envs.rejected.items() if r.revision == revision and r.errors
                      and all(x.get("code") == "unknown-image" for x in r.errors))

    def _touched(self, envs: Iterable[str], revision: str) -> set[str]:
        """The environments whose folder at ``revision`` differs from the one they applied (or never applied)."""
        path = self.settings.path
        ids: dict[str, dict[str, str]] = {}

        def folders(rev: str) -> dict[str, str]:
            if rev not in ids:
                ids[rev] = self.git.folder_ids(rev, path)
            return ids[rev]

        out = set()
        for env in envs:
            applied = self.envs.applied_revision(env)
            if applied is None or folders(applied).get(env) != folders(revision).get(env):
                out.add(env)
        return out

    # ------------------------------------------------------------------ load and check
    async def load(self, head: CommitInfo, *, retry: bool) -> Evaluation | None:
        """Load ``head`` and check it; None when no environment needs judging at it."""
        if self.judged == head.revision and not (
                retry and any(retryable(r, head.revision) for r in self.envs.rejected.values())):
            return None
        known = set(self.envs.applied) | set(self.envs.rejected)
        if known and not any(self._pending(e, head.revision, retry=retry) for e in known):
            self.judged = head.revision  # judged before a restart: every environment applied or rejected it
            return None
        try:
            tree = await asyncio.to_thread(self.load_tree, head.revision)
        except Transient:
            raise
        except Exception as exc:
            raise Transient(f"cannot load revision {head.revision[:12]}: {exc!r}") from exc
        envs = set(tree.environments) | set(tree.applications) | set(self.envs.applied)
        for gone in set(self.envs.rejected) - envs:  # a folder that is no more (or a migrated record)
            self.envs.rejected.pop(gone)
        candidates = {e for e in envs if self._pending(e, head.revision, retry=retry)}
        if not candidates:
            self.judged = head.revision
            return None
        touched = await asyncio.to_thread(self._touched, candidates, head.revision)
        # every check that can reject: a list of error_json/problem_json, each at its file:line (or
        # with "env"); attribute() gives each to the environment whose folder holds its file
        errors = [problem_json(p) for p in tree.errors]
        errors += await asyncio.to_thread(self._signatures, head, touched)
        errors += await asyncio.to_thread(self.secrets.decrypt, tree)  # age values kept in Git
        errors += locate_secrets(tree, self.secrets.names())  # like an unknown image: retried when it appears
        errors += check_boundaries(tree, secrets=self.secrets, outbound=self.outbound)  # scopes, --outbound-allow
        by_env = attribute(_blame_route_collisions(errors, envs=envs, touched=touched), envs=envs, touched=touched)
        return Evaluation(head=head, tree=tree, candidates=candidates,
                          errors={e: errs for e, errs in by_env.items() if e in candidates})

    def _signatures(self, head: CommitInfo, touched: set[str]) -> list[dict[str, Any]]:
        """One ``unsigned`` error per environment the commit changes whose --allowed-signers file
        does not hold the key that signed it."""
        s = self.settings
        verdicts: dict[Path, str | None] = {}
        out = []
        for env in sorted(touched):
            signers = s.env_signers.get(env, s.allowed_signers)
            if signers is None:
                continue
            if signers not in verdicts:
                verdicts[signers] = self.git.verify_signature(head.revision, allowed_signers=signers)
            why = verdicts[signers]
            if why is None:
                continue
            option = f"{env}={signers}" if env in s.env_signers else str(signers)
            out.append({**error_json(
                "", 0, f"commit {head.revision[:12]} changes {env}/ but is not signed by an allowed key for {env} "
                       f"(--allowed-signers {option}: {why.rstrip('.')}); to fix: sign the commit with a key "
                       f"listed in {signers} (git commit -S with gpg.format=ssh), or have the operator add your "
                       "key to that file",
                code="unsigned"), "env": env})
        return out

    def load_tree(self, revision: str) -> ManifestTree:
        from model.loader import load_revision, load_tree

        # `git archive` + load_tree is ~15x faster than reading blob by blob through gitpython
        # (1000 files: 0.9 s instead of 15 s); trees with links go the careful way.
        with tempfile.TemporaryDirectory(dir=self.settings.data, prefix="checkout-") as tmp:
            try:
                root = self.git.export(revision, self.settings.path, Path(tmp))
            except (GitError, tarfile.TarError):
                tree: ManifestTree = load_revision(self.git.mirror, revision, subdir=self.settings.path)
            else:
                tree = load_tree(root)
        tree.revision = revision
        # age values kept in Git: decrypted wherever a tree is loaded (a restart, a follower taking the
        # lead); a value that cannot be is logged here and rejected with file:line by load()
        self.secrets.decrypt(tree)
        return tree

    # ------------------------------------------------------------------ resolve, then apply or reject
    async def resolve(self, ev: Evaluation) -> list[str]:
        """Resolve the tags of the environments still valid, check them against the registry, then
        apply or reject each judged environment; the environments rejected."""
        tree, head = ev.tree, ev.head
        valid = sorted(ev.candidates - set(ev.errors))
        images = {e: env_images(tree, e) for e in valid}
        digests, unknown, unreachable = await self.resolve_tags(set().union(*images.values()) if images else ())
        for env in valid:
            for image in sorted(set(unknown) & images[env]):
                ev.errors.setdefault(env, []).append(locate_image(tree, image, str(unknown[image]), env=env))
        if unreachable is not None:
            raise Transient(str(unreachable)) from unreachable
        valid = [e for e in valid if e not in ev.errors]
        if valid:  # --signature-policy: an unsigned or wrongly signed digest rejects its environment
            try:
                unsigned = await asyncio.to_thread(self.signatures.check, _subtree(tree, valid), digests)
            except NotReachable as exc:
                raise Transient(f"registry {self.settings.registry} could not answer the signature checks: "
                                f"{exc}") from exc
            for env, errs in attribute(unsigned, envs=valid, touched=valid).items():
                ev.errors.setdefault(env, []).extend(errs)
        valid = [e for e in valid if e not in ev.errors]
        if valid:
            problems = await asyncio.to_thread(self._check_registry, _subtree(tree, valid), digests)
            for env, errs in attribute(problems, envs=valid, touched=valid).items():
                ev.errors.setdefault(env, []).extend(errs)
        self.judged = head.revision
        applied = [e for e in sorted(ev.candidates) if e not in ev.errors]
        for env in sorted(ev.errors):
            self._reject(head, env, ev.errors[env])
        self._apply(head, tree, applied, {e: {i: digests[i] for i in images.get(e, ()) if i in digests}
                                          for e in applied})
        return sorted(ev.errors)

    async def resolve_tags(self, images: Iterable[str]) -> tuple[
            dict[str, str], dict[str, tags_mod.UnknownImage], tags_mod.RegistryUnreachable | None]:
        """Resolve each tag on its own (at most RESOLVE_WORKERS requests at once, the whole within
        RESOLVE_DEADLINE seconds): the digests found, the images the registry does not hold, and why
        the registry could not be asked (None when it answered for every image)."""
        loop = asyncio.get_running_loop()
        futures = {
            image: loop.run_in_executor(self._resolver, functools.partial(
                tags_mod.resolve, [image], registry_url=self.settings.registry, timeout=REGISTRY_TIMEOUT,
                auth=self.settings.registry_auth()))
            for image in sorted(set(images))
        }
        if not futures:
            return {}, {}, None
        _, pending = await asyncio.wait(futures.values(), timeout=RESOLVE_DEADLINE)
        for future in pending:
            future.cancel()
        digests: dict[str, str] = {}
        unknown: dict[str, tags_mod.UnknownImage] = {}
        unreachable: tags_mod.RegistryUnreachable | None = None
        for image, future in futures.items():
            if future.cancelled():
                unreachable = unreachable or tags_mod.RegistryUnreachable(
                    f"registry {self.registry_host} did not resolve {image} within {RESOLVE_DEADLINE:g}s")
                continue
            exc = future.exception()
            if exc is None:
                digests.update(future.result())
            elif isinstance(exc, tags_mod.UnknownImage):
                unknown[image] = exc
            elif isinstance(exc, tags_mod.RegistryUnreachable):
                unreachable = unreachable or exc
            else:
                unreachable = unreachable or tags_mod.RegistryUnreachable(f"cannot resolve {image}: {exc!r}")
        return digests, unknown, unreachable

    def _check_registry(self, tree: ManifestTree, digests: dict[str, str]) -> list[dict[str, Any]]:
        """The manifest library's registry checks (imports/exports vs links), when the registry is
        a Driftless registry (it records component info); plain OCI registries are not asked."""
        if not self._speaks_component_api(digests):
            return []
        from model.registry_check import check_registry

        try:
            problems = [p for p in check_registry(tree, registry_url=self.settings.registry) if p.level == "error"]
        except Exception as exc:
            raise Transient(f"registry check failed: {exc!r}") from exc
        # the registry not answering (or not describing an image) says nothing about the commit: retry
        unreachable = [p for p in problems if p.code == "registry-unreachable"]
        if unreachable:
            raise Transient(f"registry {self.settings.registry} could not answer the component checks: "
                            f"{unreachable[0].message}")
        return [problem_json(p) for p in problems]

    def _speaks_component_api(self, digests: dict[str, str]) -> bool:
        if self._component_api is not None:
            return self._component_api
        for image, digest in digests.items():
            ref = parse(image)
            if ref.registry not in (None, self.registry_host):
                continue
            session = registry_client.Session(self.settings.registry, timeout=REGISTRY_TIMEOUT)
            try:
                status, _, _ = session.request("GET", f"/v2/_driftless/components/{ref.repository}/{digest}",
                                               ok=tuple(range(200, 600)))
            except NotReachable as exc:
                raise Transient(f"registry {self.settings.registry} not reachable: {exc}") from exc
            self._component_api = status == 200
            return self._component_api
        return False

    def _reject(self, head: CommitInfo, env: str, errors: list[dict[str, Any]]) -> None:
        previous = self.envs.rejected.get(env)
        if previous is not None and previous.revision == head.revision:
            if previous.errors == errors:
                return  # a retry that found the same: the revision's Rejected event was emitted once
        else:
            self._new_rejection()
        self.envs.rejected[env] = Rejected(revision=head.revision, errors=errors, since=time.time(),
                                           message=head.message, author=head.author)
        self.envs.save(self.store)
        kept = self.envs.applied_revision(env)
        first = errors[0]["text"] if errors else "invalid"
        self.event(type="Warning", reason="Rejected", env=env, revision=head.revision,
                   message=f"revision {head.revision[:12]} rejected for {env} ({len(errors)} error(s)); "
                           f"{kept[:12] + ' stays applied' if kept else 'nothing applied yet'}: {first}")

    def _apply(self, head: CommitInfo, tree: ManifestTree, envs: list[str], digests: dict[str, dict[str, str]]) -> None:
        if not envs:
            return
        now = time.time()
        record = {"revision": head.revision, "message": head.message, "author": head.author, "appliedAt": now}
        self.store.save_tags(head.revision, {i: d for e in envs for i, d in digests[e].items()}, at=now)
        changed = []
        for env in envs:
            old = self.envs.parts.get(env)
            if env not in tree.environments and env not in tree.applications:
                self.envs.remove(env)  # its folder is gone from Git
                changed.append(env)
                continue
            self.envs.set_applied(env, record=dict(record), tree=tree, digests=digests[env])
            if old is None or env_changed(old, tree, env):
                changed.append(env)
            for image, digest in sorted(digests[env].items()):
                if "@" not in image:
                    log.info("event=tag-resolved env=%s image=%s digest=%s revision=%s", env, image, digest,
                             head.revision[:12])
            apps = self.app_summaries_for_history(tree, env)
            last = self.store.history(env=env, limit=1)
            if not last or last[0]["apps"] != apps:
                self.store.add_history(env=env, revision=head.revision, applied_at=now, message=head.message,
                                       author=head.author, apps=apps)
        self.envs.rebuild()
        self.envs.save(self.store)
        for env in changed:
            gone = " (its folder is gone: nothing of it runs any more)" if env not in self.envs.applied else ""
            self.event(reason="Applied", env=env, revision=head.revision,
                       message=f"revision {head.revision[:12]} applied to {env}{gone}: {head.message}")
        found = commit_event(head.message)  # a promotion's or rollback's commit, now applied
        if found is not None and found[1] in envs and found[1] in self.envs.applied:
            reason, env, app, message = found
            self.event(reason=reason, env=env, app=app, revision=head.revision, message=message)

    def app_summaries_for_history(self, tree: ManifestTree, env: str) -> list[dict[str, Any]]:
        digests = self.envs.digests.get(env, {})
        return [
            {
                "name": app.name,
                "components": [
                    {"name": c.name, "image": c.image, "digest": digests.get(c.image, c.image.partition("@")[2])}
                    for c in app.components
                ],
            }
            for _, app in sorted(tree.applications.get(env, {}).items())
        ]


_OTHER_ENV = re.compile(r"in environment '([^']+)'")


def _blame_route_collisions(errors: list[dict[str, Any]], *, envs: Collection[str],
                            touched: Collection[str]) -> list[dict[str, Any]]:
    """A route claimed in two environments is reported in the later one's file; when only the other
    environment changed, the commit that made the collision is its: the error goes to it."""
    out = []
    for error in errors:
        found = _OTHER_ENV.search(str(error.get("message") or ""))
        if error.get("code") == "route-collision" and found and not error.get("env"):
            mine, other = folder_of(error.get("file"), envs), found.group(1)
            if mine not in touched and other in touched:
                error = {**error, "env": other}
        out.append(error)
    return out


def _subtree(tree: ManifestTree, envs: Iterable[str]) -> ManifestTree:
    """``tree`` restricted to ``envs`` (what the registry checks look at: the environments still valid)."""
    keep = set(envs)
    prefixes = tuple(f"{e}{sep}" for e in keep for sep in (":", "/"))
    return ManifestTree(revision=tree.revision,
                        environments={e: v for e, v in tree.environments.items() if e in keep},
                        applications={e: v for e, v in tree.applications.items() if e in keep},
                        locations={k: v for k, v in tree.locations.items() if k.startswith(prefixes)})
