"""``wasi:config/store`` from the environment: compose ``adapters/config-from-env.wat`` into a
component that imports ``wasi:config/store``, before it is compiled.

Why: ``wasmtime serve`` implements ``wasi:config/store`` only from ``-S config-var=NAME=VALUE`` on its
command line (its ``--config`` TOML file refuses ``config-var``), where ``ps`` shows the values. The
host already gives a served process its config as environment variables (``--env NAME``, the value
in the child's environment). The adapter exports ``wasi:config/store@0.2.0-rc.1`` over
``wasi:cli/environment``: plugged into the component's import, the composed component reads config
from the environment and no longer imports ``wasi:config/store`` (so ``-S config`` is not needed).

    >>> if imports_config_store(info.imports):
    ...     wasm = with_config_from_env(wasm, wasm_tools=Path(wasm_tools_path()))

What the component sees: ``get(key)`` is the environment variable named exactly ``key`` (``none``
when absent); ``get-all()`` is the whole environment. Both skip ``INSTANCE_ID`` (``wasmtime serve``
injects it; it is not config), but both include every other variable of the process, e.g. the
``<LINK>_URL`` variables of HTTP links. Errors are never returned.

The composition is ``wasm-tools compose`` (deprecated upstream in favour of ``wac``, still working in
wasm-tools 1.262): the adapter is a definition component whose export fills the root's import. The
adapter's ``wasi:cli/environment`` import is given the version the component itself imports, so the
result imports that interface once. :data:`ADAPTER_ID` changes with the adapter's text: include it in
any cache key of a composed component's compiled form.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from host.errors import HostError
from shared.interfaces import WASI_CONFIG_STORE, unversioned

ADAPTER_NAME = "config-from-env.wat"
CONFIG_STORE_EXPORT = "wasi:config/store@0.2.0-rc.1"  # what the adapter exports
WASI_CLI_ENVIRONMENT = "wasi:cli/environment"
ADAPTER_ENV_IMPORT = "wasi:cli/environment@0.2.0"  # as written in the .wat; rewritten per component
WASM_TOOLS_TIMEOUT_SECONDS = 120.0
_ENV_VERSION = re.compile(r"^0\.2\.\d+$")


class ComposeError(HostError):
    """The config adapter could not be composed into the component; the message says why."""


def _adapter_text() -> str:
    return resources.files("host").joinpath("adapters", ADAPTER_NAME).read_text(encoding="utf-8")


ADAPTER_ID = hashlib.sha256(_adapter_text().encode()).hexdigest()[:16]


def imports_config_store(imports: Sequence[str]) -> bool:
    """Whether a component with these imports (``ns:pkg/iface@ver`` names) imports ``wasi:config/store``."""
    return any(unversioned(name) == WASI_CONFIG_STORE for name in imports)


def with_config_from_env(wasm: bytes, *, wasm_tools: Path, imports: Sequence[str] | None = None) -> bytes:
    """The component ``wasm`` with the config-from-env adapter plugged into its ``wasi:config/store``
    import. ``imports``: the component's imports when already known (else read with ``wasm-tools``).

    Raises :class:`ComposeError` when the component does not import ``wasi:config/store@0.2.0-rc.1``
    (another version is not provided), when ``wasm-tools`` fails, or when the result still imports
    ``wasi:config/store``."""
    if imports is None:
        imports = _imports(wasm, wasm_tools)
    stores = [name for name in imports if unversioned(name) == WASI_CONFIG_STORE]
    if not stores:
        raise ComposeError("the component does not import wasi:config/store: nothing to compose")
    if stores != [CONFIG_STORE_EXPORT]:
        raise ComposeError(f"the component imports {', '.join(stores)}; the config adapter provides only "
                           f"{CONFIG_STORE_EXPORT}: rebuild the component against that version")
    env_versions = [name.split("@", 1)[1] for name in imports
                    if unversioned(name) == WASI_CLI_ENVIRONMENT and "@" in name]
    env_version = next((v for v in env_versions if _ENV_VERSION.match(v)), "0.2.0")
    adapter = _adapter(str(wasm_tools), env_version)
    with tempfile.TemporaryDirectory(prefix="driftless-compose-") as tmp:
        root, definition, out = Path(tmp, "component.wasm"), Path(tmp, "adapter.wasm"), Path(tmp, "composed.wasm")
        root.write_bytes(wasm)
        definition.write_bytes(adapter)
        _run(wasm_tools, ["compose", "-q", str(root), "-d", str(definition), "-o", str(out)],
             what="composing the config adapter into the component")
        composed = out.read_bytes()
    left = [name for name in _imports(composed, wasm_tools) if unversioned(name) == WASI_CONFIG_STORE]
    if left:
        raise ComposeError(f"composing the config adapter left the import {', '.join(left)} unresolved")
    return composed


@functools.lru_cache(maxsize=8)
def _adapter(wasm_tools: str, env_version: str) -> bytes:
    """The adapter as a binary component importing ``wasi:cli/environment@<env_version>``."""
    text = _adapter_text()
    if ADAPTER_ENV_IMPORT not in text:
        raise ComposeError(f"host/adapters/{ADAPTER_NAME} does not import {ADAPTER_ENV_IMPORT}")
    text = text.replace(ADAPTER_ENV_IMPORT, f"{WASI_CLI_ENVIRONMENT}@{env_version}")
    return _run(Path(wasm_tools), ["parse", "-", "-o", "/dev/stdout"], data=text.encode(),
                what=f"parsing host/adapters/{ADAPTER_NAME}")


def _imports(wasm: bytes, wasm_tools: Path) -> list[str]:
    """The names a component imports (``ns:pkg/iface@ver`` for interfaces), from ``wasm-tools
    component wit --json`` (its world is the last one of the resolve)."""
    out = _run(wasm_tools, ["component", "wit", "--json"], data=wasm, what="reading the component's imports")
    try:
        doc = json.loads(out)
        interfaces, packages = doc["interfaces"], doc["packages"]
        names: list[str] = []
        for key, item in doc["worlds"][-1]["imports"].items():
            ref = item.get("interface") if isinstance(item, dict) else None
            iface = interfaces[ref["id"]] if isinstance(ref, dict) else None
            if iface and iface.get("name") and iface.get("package") is not None:
                package, _, version = str(packages[iface["package"]]["name"]).partition("@")
                names.append(f"{package}/{iface['name']}" + (f"@{version}" if version else ""))
            else:
                names.append(key)
        return names
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ComposeError(f"unexpected `wasm-tools component wit --json` output: {exc!r}") from None


def _run(wasm_tools: Path, args: list[str], *, what: str, data: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run([str(wasm_tools), *args], input=data, capture_output=True, check=False,
                              timeout=WASM_TOOLS_TIMEOUT_SECONDS,
                              env={**os.environ, "RUST_LOG": "error", "NO_COLOR": "1"})
    except subprocess.TimeoutExpired:
        raise ComposeError(f"{what}: wasm-tools took more than {WASM_TOOLS_TIMEOUT_SECONDS:.0f} s; gave up") from None
    except OSError as exc:
        raise ComposeError(f"{what}: cannot run {wasm_tools}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        detail = "; ".join(ln for ln in lines if not ln.startswith(("WARNING", "Please use", "Please"))) or \
            f"exit code {proc.returncode}"
        raise ComposeError(f"{what}: wasm-tools {args[0]} failed: {detail[:500]}")
    return proc.stdout


# for host.outbound, which composes its adapter the same way
component_imports = _imports
run_wasm_tools = _run
