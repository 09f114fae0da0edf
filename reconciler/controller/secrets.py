"""The reconciler's secret store: ``driftless reconcile --secrets-file FILE``, YAML, one secret a key::

    db-password:                      # scoped: only these environments may use it
      value: "s3cret"
      environments: [prod, staging]
    github-status: {value: "ghp_...", environments: [prod]}
    greeting: "hello"                 # plain: every environment may use it (kept for existing files)

A reference to a secret from an environment outside its ``environments`` (a config value's
``secretRef``, a commit status's ``token``, a notification's ``secretName``) rejects that environment
at the reference's file:line (:mod:`.boundaries`); and :meth:`SecretStore.reveal`, the one place a
value leaves, never hands a value to an instance of another environment. ``environments: ["*"]``
says "every environment" explicitly.

The file must not be readable by group or others (refused otherwise); it is re-read when it changes
(a bad new file is refused with a warning and the last good values stay). A secret's value leaves
this process only in a host's own long-poll answer (:meth:`SecretStore.reveal`) and, for commit
status and notification tokens, in the request to the allowed URL; everywhere else (published
documents, the state store, the API, drift, reports, logs) it is its fingerprint
(:func:`wire.control.secret_fingerprint`): an HMAC-SHA256 keyed with the state store's
``fingerprint_key`` (made once, shared by replicated reconcilers, never shown).

Secrets kept in Git, encrypted: a config value ``{age: "-----BEGIN AGE ENCRYPTED FILE-----..."}``
(``model.types.SecretRef.from_age``) is decrypted here, with the X25519 identities of
``driftless reconcile --age-identity-file FILE`` (``age-keygen`` format, mode 0600), by pyrage, off
the event loop, when a revision is loaded (:meth:`SecretStore.decrypt`). From then on it is a secret
like the others, named ``age-<16 hex of the ciphertext's SHA-256>``. A value encrypted with
``driftless secrets encrypt --env prod`` carries its environments inside the ciphertext (a first
plaintext line ``driftless-environments: prod``): used in another environment's file it rejects that
environment at its file:line. One without (the age CLI, older values) is usable by whichever
environment's file holds it. A value that
cannot be decrypted rejects the revision at its file:line (code ``undecryptable-secret``).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from model.types import ManifestTree, SecretRef
from reconciler.controller.revisions import error_json
from shared.errors import UsageError
from wire.control import HostDesiredState, InstanceSpec, secret_fingerprint, secret_name

log = logging.getLogger("driftless.reconciler.secrets")


EVERY_ENVIRONMENT = "*"
BOUND_HEADER = "driftless-environments: "  # first plaintext line of an age value bound to environments
FORMAT_HINT = "one secret a key: NAME: {value: \"...\", environments: [prod]} (or NAME: \"...\" for every environment)"


@dataclass(frozen=True, slots=True)
class Secret:
    value: str
    environments: frozenset[str] | None = None  # None: every environment (the plain NAME: value form)

    def allows(self, env: str) -> bool:
        return self.environments is None or env in self.environments

    def scope(self) -> str:
        return "every environment" if self.environments is None else ", ".join(sorted(self.environments))


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _secret(path: Path, name: str, entry: Any) -> Secret:
    if _scalar(entry):
        return Secret(str(entry))
    if not isinstance(entry, dict):
        raise UsageError(f"--secrets-file {path}: secret {name!r} must be a string value or "
                         "{value: ..., environments: [...]}", hint=FORMAT_HINT)
    unknown = sorted(set(map(str, entry)) - {"value", "environments"})
    if unknown:
        raise UsageError(f"--secrets-file {path}: secret {name!r} has unknown field(s) {', '.join(unknown)}",
                         hint=FORMAT_HINT)
    if not _scalar(entry.get("value")):
        raise UsageError(f"--secrets-file {path}: secret {name!r} needs value: a string", hint=FORMAT_HINT)
    envs = entry.get("environments")
    if not isinstance(envs, list) or not envs or not all(isinstance(e, str) and e for e in envs):
        raise UsageError(f"--secrets-file {path}: secret {name!r} needs environments: a list of the environments "
                         "that may use it", hint=f'environments: [prod] (or ["{EVERY_ENVIRONMENT}"] for every one)')
    return Secret(str(entry["value"]), None if EVERY_ENVIRONMENT in envs else frozenset(envs))


def read_scoped_secrets(path: Path) -> dict[str, Secret]:
    """The secrets of ``path`` with their scopes; UsageError says what is wrong (never quoting a value)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"--secrets-file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"--secrets-file {path} is not a file")
    if st.st_mode & 0o077:
        raise UsageError(f"--secrets-file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
                         hint=f"chmod 600 {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"--secrets-file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"--secrets-file {path} is not valid YAML{where}", hint=FORMAT_HINT) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--secrets-file {path} must be a mapping of secret names to values", hint=FORMAT_HINT)
    out: dict[str, Secret] = {}
    for name, entry in data.items():
        if not isinstance(name, str):
            raise UsageError(f"--secrets-file {path}: secret names are strings, not {name!r}", hint=FORMAT_HINT)
        out[name] = _secret(path, name, entry)
    return out


def read_secrets(path: Path) -> dict[str, str]:
    """The values of ``path`` by name (scopes aside)."""
    return {name: secret.value for name, secret in read_scoped_secrets(path).items()}


def read_age_identities(path: Path) -> list[object]:
    """The age X25519 identities of ``path`` (``age-keygen`` output: ``AGE-SECRET-KEY-1...`` lines,
    comments allowed); UsageError when the file is unreadable, readable by others or holds none."""
    from pyrage import x25519

    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--age-identity-file {path}: {exc.strerror or exc}") from None
    if st.st_mode & 0o077:
        raise UsageError(f"--age-identity-file {path} is readable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})", hint=f"chmod 600 {path}")
    identities: list[object] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except Exception:  # pyrage.IdentityError; never quote the line: it is a private key
            raise UsageError(f"--age-identity-file {path}: line {number} is not an age X25519 identity",
                             hint="make one with `driftless secrets keygen --out FILE` (or age-keygen -o FILE)") from None
    if not identities:
        raise UsageError(f"--age-identity-file {path} holds no identity (AGE-SECRET-KEY-1...)",
                         hint="make one with `driftless secrets keygen --out FILE` (or age-keygen -o FILE)")
    return identities


def age_recipients(identities: list[object]) -> list[str]:
    """The public keys (``age1...``) users encrypt to."""
    return [str(i.to_public()) for i in identities]  # type: ignore[attr-defined]


def bind(value: str, environments: list[str]) -> str:
    """The plaintext ``driftless secrets encrypt --env`` encrypts: ``value`` bound to ``environments``."""
    return f"{BOUND_HEADER}{','.join(environments)}\n{value}" if environments else value


def split_bound(plain: str) -> tuple[str, frozenset[str] | None]:
    """(value, the environments it is bound to, None for any) of a decrypted plaintext."""
    if not plain.startswith(BOUND_HEADER):
        return plain, None
    header, _, value = plain.partition("\n")
    envs = frozenset(e.strip() for e in header[len(BOUND_HEADER):].split(",") if e.strip())
    return value, envs or None


def decrypt_age(ciphertext: str, identities: list[object]) -> str | None:
    """The value of an age ciphertext (one trailing newline dropped: ``echo value | age`` means
    ``value``), or None when none of ``identities`` opens it or it is damaged."""
    import pyrage

    try:
        plain = pyrage.decrypt(ciphertext.strip().encode() + b"\n", identities)
        value = plain.decode()
    except (pyrage.DecryptError, UnicodeDecodeError, ValueError, TypeError):
        return None
    return value[:-1] if value.endswith("\n") else value


class SecretStore:
    """Secret values by name with the environments that may use them, their fingerprints, and every
    value seen by fingerprint (so a document published before a change is still answered with the
    value it stands for)."""

    def __init__(self, path: Path | None, *, age_identity_file: Path | None = None,
                 fingerprint_key: bytes | None = None) -> None:
        self.path = path
        self.age_identity_file = age_identity_file
        self._identities = read_age_identities(age_identity_file) if age_identity_file is not None else []
        self.age_recipients = age_recipients(self._identities)
        # until set_fingerprint_key gives the state store's: a key of this process alone
        self._key = fingerprint_key or os.urandom(32)
        self._age: dict[str, str] = {}  # age secret name -> decrypted value (SecretRef.from_age)
        self._age_scope: dict[str, frozenset[str] | None] = {}  # the environments it is bound to; None: any
        self._secrets: dict[str, Secret] = {}
        self._by_fingerprint: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        if path is not None:
            self._set(read_scoped_secrets(path))
            self._stamp = self._stat()

    def set_fingerprint_key(self, key: bytes) -> None:
        """Use the state store's key (the same for every reconciler sharing it); never shown."""
        self._key = key
        self._by_fingerprint = {}
        self._set(self._secrets)
        for name, value in self._age.items():
            self._by_fingerprint[self.fingerprint(name, value)] = value

    def fingerprint(self, name: str, value: str) -> str:
        return secret_fingerprint(name, value, key=self._key)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _set(self, secrets: dict[str, Secret]) -> None:
        unscoped = sorted(name for name, secret in secrets.items() if secret.environments is None)
        if unscoped and unscoped != sorted(n for n, s in self._secrets.items() if s.environments is None):
            # said once per change: names only, which every environment's Git may reference
            log.warning("event=secrets-unscoped names=%s hint=scope them: NAME: {value: ..., environments: [ENV]}",
                        ",".join(unscoped))
        self._secrets = secrets
        for name, secret in secrets.items():
            self._by_fingerprint[self.fingerprint(name, secret.value)] = secret.value

    def names(self) -> frozenset[str]:
        return frozenset(self._secrets) | frozenset(self._age)

    def get(self, name: str) -> str | None:
        secret = self._secrets.get(name)
        return secret.value if secret is not None else self._age.get(name)

    def scope(self, name: str) -> Secret | None:
        """The secret of --secrets-file named ``name`` (its value and scope); None for others (age values)."""
        return self._secrets.get(name)

    def allows(self, name: str, env: str) -> bool:
        """Whether ``env`` may use the secret ``name`` (an age value: the environment whose file holds it)."""
        secret = self._secrets.get(name)
        if secret is not None:
            return secret.allows(env)
        bound = self._age_scope.get(name)
        return name in self._age and (bound is None or env in bound)

    def get_for(self, name: str, env: str) -> str | None:
        """The value of ``name`` when ``env`` may use it, else None (unknown, or scoped to others)."""
        return self.get(name) if self.allows(name, env) else None

    def fingerprints(self) -> dict[str, str]:
        """Secret name -> fingerprint (what the planner puts in documents)."""
        values = {**self._age, **{name: secret.value for name, secret in self._secrets.items()}}
        return {name: self.fingerprint(name, value) for name, value in values.items()}

    def decrypt(self, tree: ManifestTree) -> list[dict[str, Any]]:
        """Decrypt every age value of ``tree`` (blocking: run it off the event loop). Returns an
        ``undecryptable-secret`` error at the file:line of each value that cannot be decrypted (no
        --age-identity-file, another recipient, damaged), and a ``secret-out-of-scope`` error where a
        value bound to other environments (``driftless secrets encrypt --env``) is used; the values
        that can be decrypted are known from now on."""
        errors: list[dict[str, Any]] = []
        for env, apps in sorted(tree.applications.items()):
            for _, app in sorted(apps.items()):
                for i, comp in enumerate(app.components):
                    for key, ref in comp.config.items():
                        if not isinstance(ref, SecretRef) or ref.age is None:
                            continue
                        path = f"spec.components[{i}].config.{key}"
                        if ref.name not in self._age:
                            plain = decrypt_age(ref.age, self._identities) if self._identities else None
                            if plain is not None:
                                value, bound = split_bound(plain)
                                self._age[ref.name] = value
                                self._age_scope[ref.name] = bound
                                self._by_fingerprint[self.fingerprint(ref.name, value)] = value
                        if ref.name in self._age:
                            bound = self._age_scope.get(ref.name)
                            if bound is not None and env not in bound:
                                file, line, column = tree.location(env=env, app=app.name, path=path)
                                errors.append(error_json(
                                    file, line, f"the age-encrypted value at {path} is bound to environment(s) "
                                                f"{', '.join(sorted(bound))}, not {env!r}: encrypt the value for "
                                                f"{env} (driftless secrets encrypt --env {env})",
                                    code="secret-out-of-scope", column=column))
                            continue
                        file, line, column = tree.location(env=env, app=app.name, path=path)
                        why = ("the reconciler has no age identity (start it with --age-identity-file)"
                               if not self._identities else
                               "the reconciler's age identity cannot decrypt it (encrypted to another recipient, "
                               "or damaged); encrypt it again to " + ", ".join(self.age_recipients))
                        errors.append(error_json(file, line, f"the age-encrypted value at {path} cannot be "
                                                             f"decrypted: {why}", code="undecryptable-secret",
                                                 column=column))
        if errors:
            log.warning("event=age-refused values=%d", len(errors))
        return errors

    def reload(self, *, required: Mapping[str, frozenset[str]] | frozenset[str] = frozenset()) -> str | None:
        """Read the file again when it changed. Returns None when nothing changed, "" when new values
        were loaded, or why the new file was refused (the last good values stay): unreadable, group or
        world readable, missing a secret in ``required`` (referenced by the applied revision), or
        scoping one away from an environment of the applied revision that uses it (``required``: name
        -> the environments using it; remove the reference from Git first, then narrow the scope)."""
        stamp = self._stat()
        if self.path is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            secrets = read_scoped_secrets(self.path)
        except UsageError as exc:
            why = f"{exc}" + (f" ({exc.hint})" if exc.hint else "")
            log.warning("event=secrets-refused reason=%s", why)
            return why
        uses = required if isinstance(required, Mapping) else dict.fromkeys(required, frozenset[str]())
        missing = sorted(set(uses) - set(secrets) - set(self._age))
        if missing:
            why = (f"--secrets-file {self.path} lacks secret(s) {', '.join(missing)} that the applied revision "
                   "references; the previous secrets stay")
            log.warning("event=secrets-refused reason=%s", why)
            return why
        narrowed = sorted(f"{name} (used by {', '.join(sorted(env for env in envs if not secrets[name].allows(env)))})"
                          for name, envs in uses.items()
                          if name in secrets and not all(secrets[name].allows(env) for env in envs))
        if narrowed:
            why = (f"--secrets-file {self.path} scopes secret(s) {'; '.join(narrowed)} away from environments "
                   "the applied revision uses them in; the previous secrets stay (remove those references from "
                   "Git first)")
            log.warning("event=secrets-refused reason=%s", why)
            return why
        if secrets == self._secrets:
            return None
        self._set(secrets)
        log.info("event=secrets-reloaded secrets=%d", len(secrets))
        return ""

    def _value_of(self, fingerprint: str) -> str | None:
        value = self._by_fingerprint.get(fingerprint)
        if value is None:  # published before a restart with another value: the current one
            name = secret_name(fingerprint)
            value = self.get(name) if name is not None else None
        return value

    def reveal(self, doc: HostDesiredState) -> HostDesiredState:
        """``doc`` with each secret key's fingerprint replaced by the value (and kept in the instance's
        ``fingerprints``): for the long-poll answer of the host the document belongs to, only. A
        secret scoped away from the instance's environment is never revealed (the key keeps the
        fingerprint; the revision referencing it was rejected, this is the last line)."""
        if not any(i.secrets for i in doc.instances):
            return doc
        instances: list[InstanceSpec] = []
        for spec in doc.instances:
            if not spec.secrets:
                instances.append(spec)
                continue
            config = dict(spec.config)
            fingerprints: dict[str, str] = {}
            for key in spec.secrets:
                fingerprint = config.get(key)
                value = self._value_of(fingerprint) if fingerprint is not None else None
                if fingerprint is None or value is None:
                    continue
                name = secret_name(fingerprint) or key
                if name in self.names() and not self.allows(name, spec.env):
                    log.warning("event=secret-withheld host=%s instance=%s secret=%s env=%s", doc.host, spec.id,
                                name, spec.env)
                    continue
                config[key] = value
                fingerprints[key] = self.fingerprint(name, value)
            instances.append(replace(spec, config=config, fingerprints=fingerprints))
        return replace(doc, instances=tuple(instances))
