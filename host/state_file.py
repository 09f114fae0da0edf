"""Desired states on disk: the last one from the reconciler (``<data>/desired.json``, written
atomically, read at start for static stability) and a user's ``--desired FILE`` (JSON or YAML)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import yaml

from host.errors import HostError
from wire.control import HostDesiredState


def save_desired(path: Path, desired: HostDesiredState) -> None:
    """Mode 0600: the reconciler's answer carries the values of the secrets this host's instances use."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover may have another mode: O_CREAT keeps it
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(desired.to_json(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_desired(path: Path, *, host: str | None = None) -> HostDesiredState:
    """Parse a HostDesiredState (JSON or YAML); HostError says what is wrong and where."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise HostError(f"cannot read desired state {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise HostError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HostError(f"{path}: expected a HostDesiredState object (host, generation, instances)")
    if host is not None:
        data.setdefault("host", host)
    data.setdefault("generation", 1)
    try:
        desired = HostDesiredState.from_json(data)
    except KeyError as exc:
        raise HostError(f"{path}: missing field {exc.args[0]!r} (in the HostDesiredState or one of its instances)") from None
    except (TypeError, ValueError) as exc:
        raise HostError(f"{path}: not a HostDesiredState: {exc}") from None
    ids = [i.id for i in desired.instances]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise HostError(f"{path}: instance id {duplicate!r} appears twice; ids must be unique")
    return desired
