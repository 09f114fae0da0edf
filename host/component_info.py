"""What each component is (kind, imports, exports: its world) and its size, inspected once per digest
per machine and kept in the compile cache's ``info/`` (as trusted as the compiled code beside it).

A restart does not pull again to know how to run a component, and hosts placed the same new component
at once inspect it once, under a per-digest ``flock`` (three concurrent inspections of a 13 MB
component took 0.74 s on two cores, one 0.34 s, on the way to its first answer). The size tells a host
which tier to start a served component on without pulling it: a host that finds the build compiled by
another one never needs the bytes.

    store = ComponentInfoStore(compile_cache / "info")
    info = store.get(digest, fetch)        # fetch() pulls the bytes, called only on a miss
    store.size(digest)                     # bytes, once known on this machine; else None
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.errors import NotAComponent
from host.wasm_engine import check_component_bytes
from shared.wasm import InvalidWasm, WasmInfo, inspect_wasm

BIG = 1 << 20  # a component whose compile takes seconds (host/tiers.py's fast tier starts here)
INSPECTOR_FIRST_SECONDS = 0.05


class ComponentInfoStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.dir / (digest.replace(":", "-") + ".json")

    def get(self, digest: str, fetch: Callable[[], bytes]) -> WasmInfo:
        path = self._path(digest)
        found = _read(path)
        if found is not None:
            return WasmInfo.from_json(found)
        with open(path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            found = _read(path)  # another host inspected it while this one waited
            if found is None:
                return self._inspect(digest, path, fetch)
        if found.get("sizeBytes", 0) >= BIG:
            # the host that inspected it holds its bytes and is on its way to compile it: let it take the
            # compile lock first (measured: a waiter took it in 2 of 3 rounds and pulled the 13 MB again
            # on the way to the first answer)
            time.sleep(INSPECTOR_FIRST_SECONDS)
        return WasmInfo.from_json(found)

    def _inspect(self, digest: str, path: Path, fetch: Callable[[], bytes]) -> WasmInfo:
        """Pull, check and inspect (the caller holds the digest's lock), and keep the result."""
        data = fetch()
        check_component_bytes(data, what=digest)
        try:
            info = inspect_wasm(data)
        except InvalidWasm as exc:
            raise NotAComponent(f"{digest[:19]} is not a valid component: {exc}") from None
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps({**info.to_json(), "sizeBytes": len(data)}))
        tmp.replace(path)
        return info

    def size(self, digest: str) -> int | None:
        found = _read(self._path(digest))
        size = (found or {}).get("sizeBytes")
        return size if isinstance(size, int) else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
        WasmInfo.from_json(doc)  # a record it cannot read is a miss
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None
