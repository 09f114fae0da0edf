"""The reconciler's secret store: ``driftless reconcile --secrets-file FILE`` (YAML ``{name: value}``).

The file must not be readable by group or others (refused otherwise); it is re-read when it changes
(a bad new file is refused with a warning and the last good values stay). A secret's value leaves
this process only in a host's own long-poll answer (:meth:`SecretStore.reveal`); everywhere else
(published documents, SQLite, the API, drift, reports, logs) it is its fingerprint
(:func:`wire.control.secret_fingerprint`).

Secrets kept in Git, encrypted: a config value ``{age: "-----BEGIN AGE ENCRYPTED FILE-----..."}``
(``model.types.SecretRef.from_age``) is decrypted here, with the X25519 identities of
``driftless reconcile --age-identity-file FILE`` (``age-keygen`` format, mode 0600), by pyrage, off
the event loop, when a revision is loaded (:meth:`SecretStore.decrypt`). From then on it is a secret
like the others, named ``age-<16 hex of the ciphertext's SHA-256>``. A value that cannot be decrypted
rejects the revision at its file:line (code ``undecryptable-secret``).
"""

from __future__ import annotations

import logging
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from model.types import ManifestTree, SecretRef
from reconciler.controller.revisions import error_json
from shared.errors import UsageError
from wire.control import HostDesiredState, InstanceSpec, secret_fingerprint, secret_name

log = logging.getLogger("driftless.reconciler.secrets")


def read_secrets(path: Path) -> dict[str, str]:
    """The secrets of ``path``; UsageError says what is wrong (never quoting a value)."""
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
        raise UsageError(f"--secrets-file {path} is not valid YAML{where}",
                         hint="one secret a line: NAME: value") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--secrets-file {path} must be a mapping of secret names to values",
                         hint="one secret a line: NAME: value")
    out: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"--secrets-file {path}: secret {name!r} must be a string value",
                             hint="quote the value: NAME: \"...\"")
        out[name] = str(value)
    return out


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
    """Secret values by name, their fingerprints, and every value seen by fingerprint (so a document
    published before a change is still answered with the value it stands for)."""

    def __init__(self, path: Path | None, *, age_identity_file: Path | None = None) -> None:
        self.path = path
        self.age_identity_file = age_identity_file
        self._identities = read_age_identities(age_identity_file) if age_identity_file is not None else []
        self.age_recipients = age_recipients(self._identities)
        self._age: dict[str, str] = {}  # age secret name -> decrypted value (SecretRef.from_age)
        self._values: dict[str, str] = {}
        self._by_fingerprint: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        if path is not None:
            self._set(read_secrets(path))
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _set(self, values: dict[str, str]) -> None:
        self._values = values
        for name, value in values.items():
            self._by_fingerprint[secret_fingerprint(name, value)] = value

    def names(self) -> frozenset[str]:
        return frozenset(self._values) | frozenset(self._age)

    def get(self, name: str) -> str | None:
        return self._values.get(name, self._age.get(name))

    def fingerprints(self) -> dict[str, str]:
        """Secret name -> fingerprint (what the planner puts in documents)."""
        return {name: secret_fingerprint(name, value) for name, value in {**self._age, **self._values}.items()}

    def decrypt(self, tree: ManifestTree) -> list[dict[str, Any]]:
        """Decrypt every age value of ``tree`` (blocking: run it off the event loop). Returns an
        ``undecryptable-secret`` error at the file:line of each value that cannot be decrypted (no
        --age-identity-file, another recipient, damaged); the values that can be are known from now on."""
        errors: list[dict[str, Any]] = []
        for env, apps in sorted(tree.applications.items()):
            for _, app in sorted(apps.items()):
                for i, comp in enumerate(app.components):
                    for key, ref in comp.config.items():
                        if not isinstance(ref, SecretRef) or ref.age is None or ref.name in self._age:
                            continue
                        value = decrypt_age(ref.age, self._identities) if self._identities else None
                        if value is not None:
                            self._age[ref.name] = value
                            self._by_fingerprint[secret_fingerprint(ref.name, value)] = value
                            continue
                        path = f"spec.components[{i}].config.{key}"
                        file, line, column = tree.location(env=env, app=app.name, path=path)
                        why = ("the reconciler has no age identity (start it with --age-identity-file)"
                               if not self._identities else
                               "the reconciler's age identity cannot decrypt it (encrypted to another recipient, "
                               "or damaged); encrypt it again to " + ", ".join(self.age_recipients))
                        errors.append(error_json(file, line, f"the age-encrypted value at {path} cannot be "
                                                             f"decrypted: {why}", code="undecryptable-secret",
                                                 column=column))
        if errors:
            log.warning("event=age-undecryptable values=%d", len(errors))
        return errors

    def reload(self, *, required: frozenset[str] = frozenset()) -> str | None:
        """Read the file again when it changed. Returns None when nothing changed, "" when new values
        were loaded, or why the new file was refused (the last good values stay): unreadable, group or
        world readable, or missing a secret in ``required`` (referenced by the applied revision)."""
        stamp = self._stat()
        if self.path is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            values = read_secrets(self.path)
        except UsageError as exc:
            why = f"{exc}" + (f" ({exc.hint})" if exc.hint else "")
            log.warning("event=secrets-refused reason=%s", why)
            return why
        missing = sorted(required - set(values))
        if missing:
            why = (f"--secrets-file {self.path} lacks secret(s) {', '.join(missing)} that the applied revision "
                   "references; the previous secrets stay")
            log.warning("event=secrets-refused reason=%s", why)
            return why
        if values == self._values:
            return None
        self._set(values)
        log.info("event=secrets-reloaded secrets=%d", len(values))
        return ""

    def _value_of(self, fingerprint: str) -> str | None:
        value = self._by_fingerprint.get(fingerprint)
        if value is None:  # published before a restart with another value: the current one
            name = secret_name(fingerprint)
            value = self.get(name) if name is not None else None
        return value

    def reveal(self, doc: HostDesiredState) -> HostDesiredState:
        """``doc`` with each secret key's fingerprint replaced by the value (and kept in the instance's
        ``fingerprints``): for the long-poll answer of the host the document belongs to, only."""
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
                config[key] = value
                fingerprints[key] = secret_fingerprint(name, value)
            instances.append(replace(spec, config=config, fingerprints=fingerprints))
        return replace(doc, instances=tuple(instances))

