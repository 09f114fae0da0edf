"""What an environment's files may reach of the reconciler: only the secrets scoped to that environment,
and only the outbound URLs the operator allows. Checked when a revision is loaded; each problem is an
error at the file:line of the reference, in the file of the environment that makes it (so it rejects
that environment), saying what was refused and how to fix it.

- a config value ``{secretRef: NAME}``, a commit status's ``token: {secretRef: NAME}`` and a
  notification's ``secretName: NAME`` must name a secret of ``--secrets-file`` whose ``environments``
  include the environment (code ``secret-out-of-scope``; an unknown token or notification secret is
  ``unknown-secret``, like an unknown config secret: adding it to the file retries the revision);
- a notification's ``url`` and a commit status's API URL (``url``, or the provider's default) must
  match ``--outbound-allow`` (code ``outbound-not-allowed``; :mod:`.outbound`).

The senders check both again at each delivery (:mod:`.notify`, :mod:`.commit_status`).
"""

from __future__ import annotations

from typing import Any, Protocol

from model.types import ManifestTree, SecretRef
from model.yamldoc import format_path
from reconciler.controller.commit_status import API as COMMIT_STATUS_API
from reconciler.controller.outbound import OutboundAllowList
from reconciler.controller.revisions import error_json
from shared import http


class Scopes(Protocol):
    """What the checks read of the secret store (reconciler.controller.secrets.SecretStore)."""

    def names(self) -> frozenset[str]: ...
    def allows(self, name: str, env: str) -> bool: ...
    def scope(self, name: str) -> Any: ...  # Secret | None: .environments, .scope()


def secret_uses(tree: ManifestTree) -> dict[str, frozenset[str]]:
    """Secret name -> the environments whose files reference it (config values, tokens, notifications;
    not age values)."""
    uses: dict[str, set[str]] = {}
    for env, apps in tree.applications.items():
        for app in apps.values():
            for comp in app.components:
                for value in comp.config.values():
                    if isinstance(value, SecretRef) and value.age is None:
                        uses.setdefault(value.name, set()).add(env)
    for env, environment in tree.environments.items():
        for target in environment.commit_status:
            if target.token_secret:
                uses.setdefault(target.token_secret, set()).add(env)
        for notification in environment.notifications:
            if notification.secret_name:
                uses.setdefault(notification.secret_name, set()).add(env)
    return {name: frozenset(envs) for name, envs in uses.items()}


def _out_of_scope(secrets: Scopes, name: str, env: str, where: str) -> str:
    secret = secrets.scope(name)
    allowed = secret.scope() if secret is not None else "none"
    return (f"secret {name!r} at {where} may not be used by environment {env!r}: the reconciler's --secrets-file "
            f"allows it in {allowed}. Use a secret scoped to {env}, or ask the operator to add {env} to its "
            f"environments ({name}: {{value: ..., environments: [..., {env}]}})")


def check_boundaries(tree: ManifestTree, *, secrets: Scopes, outbound: OutboundAllowList) -> list[dict[str, Any]]:
    """Every reference of ``tree`` to a secret out of its environment's scope, and every outbound URL
    outside ``outbound``; unknown config secrets are :func:`.revisions.locate_secrets`'s."""
    out: list[dict[str, Any]] = []
    known = secrets.names()

    def error(env: str, app: str | None, path: str, message: str, code: str) -> None:
        file, line, column = tree.location(env=env, app=app, path=path)
        out.append(error_json(file, line, message, code=code, column=column))

    def secret(env: str, app: str | None, path: str, name: str, *, unknown_too: bool) -> None:
        if name not in known:
            if unknown_too:
                error(env, app, path, f"secret {name!r} at {path} is not in the reconciler's --secrets-file: ask "
                                      f"the operator to add it, scoped to {env}", "unknown-secret")
        elif not secrets.allows(name, env):
            error(env, app, path, _out_of_scope(secrets, name, env, path), "secret-out-of-scope")

    def url(env: str, path: str, value: str, what: str) -> None:
        if not outbound.allows(value):
            error(env, None, path, f"the {what} URL {http.origin(value)} at {path} is not in the reconciler's "
                                   f"outbound allow-list ({outbound}): ask the operator to allow it with "
                                   f"--outbound-allow {http.origin(value)}/PATH, or use an allowed URL",
                  "outbound-not-allowed")

    for env, apps in sorted(tree.applications.items()):
        for _, app in sorted(apps.items()):
            for i, comp in enumerate(app.components):
                for key, value in comp.config.items():
                    if isinstance(value, SecretRef) and value.age is None:
                        path = format_path(("spec", "components", i, "config", key))
                        secret(env, app.name, path, value.name, unknown_too=False)
    for env, environment in sorted(tree.environments.items()):
        for i, notification in enumerate(environment.notifications):
            url(env, f"spec.notifications[{i}].url", notification.url, "notification")
            if notification.secret_name:
                secret(env, None, f"spec.notifications[{i}].secretName", notification.secret_name, unknown_too=True)
        for i, target in enumerate(environment.commit_status):
            api = target.api_url or COMMIT_STATUS_API[target.provider]
            url(env, f"spec.commitStatus[{i}].url" if target.api_url else f"spec.commitStatus[{i}].provider", api,
                "commit-status API")
            if target.token_secret:
                secret(env, None, f"spec.commitStatus[{i}].token.secretRef", target.token_secret, unknown_too=True)
    return out
