"""Outbound HTTP of standard components, deny by default: compose ``adapters/outbound-policy.wat``
into a component that imports ``wasi:http/outgoing-handler``, before it is compiled.

Why: ``wasmtime serve`` gives every served component outbound HTTP to any address (``-S http=n`` is
refused, and no flag of wasmtime 49 filters it), the cloud metadata endpoint included. The adapter
imports the real ``wasi:http/outgoing-handler`` and exports one that passes a request on only when
its scheme + authority match the instance's allow-list, baked into the adapter here; any other
request gets ``error-code.HTTP-request-denied`` and never leaves the process. Composed into the
component's import (``wasm-tools compose``, as :mod:`host.compose` does for ``wasi:config``), the
component has no other way to send HTTP. Sockets are a separate grant (``-S tcp=n -S udp=n`` unless
``grants.sockets``).

    >>> policy = OutboundPolicy.of(spec, links_base="http://127.0.0.1:8080")
    >>> if imports_outgoing_handler(info.imports):
    ...     wasm = with_outbound_policy(wasm, policy=policy, wasm_tools=Path(wasm_tools_path()))

The allow-list is ``grants.outboundHosts`` (``api.example.com``: the port the scheme implies, 80 or
443; ``api.example.com:8443``; ``api.example.com:*``: any port; ``*.example.com``: any name below
it, never an address), plus this host's ingress (``links_base``) when the instance has HTTP links.
Addresses are matched only exactly, so a link-local or metadata address (169.254.169.254 and its
other IPv4 spellings, ``[fe80::1]``, ``[fd00:ec2::254]``) is refused unless granted as written.
The adapter sees names, not what DNS answers for them: a granted name resolving to the metadata
address is reached. Each refusal is written to the instance's stderr, which the host logs.
:attr:`OutboundPolicy.key` changes with the adapter and the rules: include it in the cache key of
the composed component's compiled form.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from host.compose import ComposeError, component_imports, run_wasm_tools
from shared.interfaces import WASI_HTTP_OUTGOING, unversioned
from shared.wasm import wasm_tools_path
from wire.control import InstanceSpec

ADAPTER_WAT, ADAPTER_WIT, ADAPTER_WORLD = "outbound-policy.wat", "outbound-policy.wit", "outbound-policy"
RULES_AT = 1024  # where the adapter's data segment holds the rules
RULES_LINE = '(data (i32.const 1024) "\\ff")'
BASE_LINE = "(global $base i32 (i32.const 2048))"
HEAP_LINE = "(global $heap (mut i32) (i32.const 2048))"
MAX_RULES_BYTES = 60 * 1024  # the rules and a first heap fit the adapter's one page of memory
EXACT, SUFFIX = 0, 1
IMPLIED_PORT, THIS_PORT, ANY_PORT = 0, 1, 2


def _adapter_file(name: str) -> str:
    return resources.files("host").joinpath("adapters", name).read_text(encoding="utf-8")


ADAPTER_ID = hashlib.sha256((_adapter_file(ADAPTER_WAT) + _adapter_file(ADAPTER_WIT)).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Rule:
    host: str  # lowercase; for SUFFIX the suffix with its leading dot (".example.com")
    kind: int = EXACT
    mode: int = IMPLIED_PORT
    port: int = 0

    @classmethod
    def parse(cls, entry: str) -> Rule:
        """``api.example.com``, ``api.example.com:8443``, ``api.example.com:*`` or ``*.example.com``
        (the schema's grammar); raises :class:`ComposeError` naming the entry when it is not one."""
        text = entry.strip().lower()
        host, sep, port = text.partition(":")
        kind = EXACT
        if host.startswith("*."):
            kind, host = SUFFIX, host[1:]
        name = host[1:] if kind == SUFFIX else host
        if not name or "*" in name or not all(c.isalnum() or c in ".-_" for c in name) or not name.isascii() \
                or len(host) > 253:
            raise ComposeError(f"grants.outboundHosts entry {entry!r} is not a host, host:port or *.domain")
        if not sep:
            return cls(host, kind, IMPLIED_PORT, 0)
        if port == "*":
            return cls(host, kind, ANY_PORT, 0)
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ComposeError(f"grants.outboundHosts entry {entry!r}: the port must be 1-65535 or *")
        return cls(host, kind, THIS_PORT, int(port))

    def encode(self) -> bytes:
        name = self.host.encode("ascii")
        return struct.pack("<BBHB", self.kind, self.mode, self.port, len(name)) + name


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """What one instance may reach with wasi:http: its rules in order (first match allows)."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, spec: InstanceSpec, *, links_base: str) -> OutboundPolicy:
        """The instance's ``grants.outboundHosts``, and this host's ingress when it has HTTP links
        (they reach linked components through it)."""
        rules = [Rule.parse(entry) for entry in spec.grants.outbound_hosts]
        if any(link.is_http for link in spec.links):
            ingress = urlsplit(links_base)
            if ingress.hostname is None:
                raise ComposeError(f"the host's links URL {links_base!r} names no host")
            host = f"[{ingress.hostname}]" if ":" in ingress.hostname else ingress.hostname
            rules.append(Rule(host, EXACT, THIS_PORT, ingress.port or (443 if ingress.scheme == "https" else 80)))
        return cls(tuple(dict.fromkeys(rules)))

    def encode(self) -> bytes:
        data = b"".join(rule.encode() for rule in self.rules) + b"\xff"
        if len(data) > MAX_RULES_BYTES:
            raise ComposeError(f"grants.outboundHosts is too long for the outbound policy ({len(data)} bytes of "
                               f"rules, at most {MAX_RULES_BYTES})")
        return data

    @property
    def key(self) -> str:
        return hashlib.sha256(ADAPTER_ID.encode() + self.encode()).hexdigest()[:16]

    def describe(self) -> str:
        out = []
        for rule in self.rules:
            host = f"*{rule.host}" if rule.kind == SUFFIX else rule.host
            out.append(host if rule.mode == IMPLIED_PORT else f"{host}:{'*' if rule.mode == ANY_PORT else rule.port}")
        return ", ".join(out) or "none"


def imports_outgoing_handler(imports: Sequence[str]) -> bool:
    """Whether a component with these imports can send HTTP (imports ``wasi:http/outgoing-handler``)."""
    return any(unversioned(name) == WASI_HTTP_OUTGOING for name in imports)


def with_outbound_policy(wasm: bytes, *, policy: OutboundPolicy, wasm_tools: Path,
                         imports: Sequence[str] | None = None) -> bytes:
    """The component ``wasm`` with the outbound policy plugged into its ``wasi:http/outgoing-handler``
    import. ``imports``: the component's imports when already known (else read with ``wasm-tools``).

    Raises :class:`ComposeError` when the component does not import ``wasi:http/outgoing-handler``
    at a 0.2.x version, or when ``wasm-tools`` fails."""
    if imports is None:
        imports = component_imports(wasm, wasm_tools)
    handlers = [name for name in imports if unversioned(name) == WASI_HTTP_OUTGOING]
    if not handlers:
        raise ComposeError("the component does not import wasi:http/outgoing-handler: nothing to compose")
    versions = {name.partition("@")[2] for name in handlers}
    version = versions.pop() if len(versions) == 1 else ""
    if not _WASI_02.match(version):
        raise ComposeError(f"the component imports {', '.join(handlers)}; the outbound policy covers "
                           f"wasi:http 0.2.x only: rebuild the component against wasi:http 0.2")
    # the adapter's other imports take the component's versions, so the result imports each once
    io = _version_of(imports, "wasi:io/streams") or version
    versions_used = WasiVersions(http=version, io=io, cli=_version_of(imports, "wasi:cli/stderr") or io)
    adapter = _adapter(str(wasm_tools), versions_used, policy.encode())
    with tempfile.TemporaryDirectory(prefix="driftless-outbound-") as tmp:
        root, definition, out = Path(tmp, "component.wasm"), Path(tmp, "policy.wasm"), Path(tmp, "composed.wasm")
        root.write_bytes(wasm)
        definition.write_bytes(adapter)
        run_wasm_tools(wasm_tools, ["compose", "-q", str(root), "-d", str(definition), "-o", str(out)],
                       what="composing the outbound policy into the component")
        return out.read_bytes()


def with_policy(source: Callable[[], bytes], *, policy: OutboundPolicy,
                imports: Sequence[str]) -> Callable[[], bytes]:
    """``source`` (what gives the component's bytes) with the policy composed in, read when called."""

    def composed() -> bytes:
        return with_outbound_policy(source(), policy=policy, wasm_tools=Path(wasm_tools_path()), imports=imports)

    return composed


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


@dataclass(frozen=True, slots=True)
class WasiVersions:
    """The WASI 0.2.x versions the adapter is built for (each package's, as the component imports them)."""

    http: str = "0.2.6"
    io: str = "0.2.6"
    cli: str = "0.2.6"

    def apply(self, text: str) -> str:
        """``text`` (the adapter's WIT or WAT) with each package's @0.2.6 rewritten to its version."""
        chosen = {"http": self.http, "io": self.io, "cli": self.cli}
        return _PACKAGE_AT.sub(lambda m: f"{m[1]}@{chosen[m[2]]}", text)


_WASI_02 = re.compile(r"^0\.2\.\d+$")
_PACKAGE_AT = re.compile(r"(wasi:(http|io|cli)(?:/[a-z-]+)?)@0\.2\.6\b")


def _version_of(imports: Sequence[str], interface: str) -> str | None:
    found = [name.partition("@")[2] for name in imports if unversioned(name) == interface]
    return next((v for v in found if _WASI_02.match(v)), None)


def adapter_wat(*, versions: WasiVersions = WasiVersions(), rules: bytes) -> str:
    """The adapter's core module (text) for ``versions`` with ``rules`` (:meth:`OutboundPolicy.encode`)."""
    wat = _adapter_file(ADAPTER_WAT)
    for line in (RULES_LINE, BASE_LINE, HEAP_LINE):
        if wat.count(line) != 1:
            raise ComposeError(f"host/adapters/{ADAPTER_WAT} does not hold the line {line!r} once")
    base = (RULES_AT + len(rules) + 15) // 16 * 16
    wat = wat.replace(RULES_LINE, f'(data (i32.const {RULES_AT}) "{_wat_bytes(rules)}")')
    wat = wat.replace(BASE_LINE, f"(global $base i32 (i32.const {base}))")
    wat = wat.replace(HEAP_LINE, f"(global $heap (mut i32) (i32.const {base}))")
    return versions.apply(wat)


@functools.lru_cache(maxsize=32)
def _adapter(wasm_tools: str, versions: WasiVersions, rules: bytes) -> bytes:
    """The adapter as a component for ``versions`` with ``rules`` baked in."""
    wat = adapter_wat(versions=versions, rules=rules)
    wit = versions.apply(_adapter_file(ADAPTER_WIT))
    tool = Path(wasm_tools)
    with tempfile.TemporaryDirectory(prefix="driftless-outbound-") as tmp:
        wit_path, wat_path, embedded = Path(tmp, "policy.wit"), Path(tmp, "policy.wat"), Path(tmp, "embedded.wasm")
        wit_path.write_text(wit, encoding="utf-8")
        wat_path.write_text(wat, encoding="utf-8")
        what = f"building host/adapters/{ADAPTER_WAT}"
        run_wasm_tools(tool, ["component", "embed", str(wit_path), "-w", ADAPTER_WORLD, str(wat_path),
                              "-o", str(embedded)], what=what)
        return run_wasm_tools(tool, ["component", "new", str(embedded), "-o", "/dev/stdout"], what=what)
