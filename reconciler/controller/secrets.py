"""The reconciler's secret store: ``driftless reconcile --secrets-file FILE`` (YAML ``{name: value}``).

The file must not be readable by group or others (refused otherwise); it is re-read when it changes
(a bad new file is refused with a warning and the last good values stay). A secret's value leaves
this process only in a host's own long-poll answer (:meth:`SecretStore.reveal`); everywhere else
(published documents, SQLite, the API, drift, reports, logs) it is its fingerprint
(:func:`wire.control.secret_fingerprint`).
"""

from __future__ import annotations

import logging
import stat
from dataclasses import replace
from pathlib import Path

import yaml

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


class SecretStore:
    """Secret values by name, their fingerprints, and every value seen by fingerprint (so a document
    published before a change is still answered with the value it stands for)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
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
        return frozenset(self._values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def fingerprints(self) -> dict[str, str]:
        """Secret name -> fingerprint (what the planner puts in documents)."""
        return {name: secret_fingerprint(name, value) for name, value in self._values.items()}

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
            value = self._values.get(name) if name is not None else None
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

