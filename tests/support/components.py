"""The example components (examples/components/*.wat), compiled from WAT into real components.

    from tests.support.components import EXAMPLES, build
    wasm = build("hello")        # bytes of a component; compiled once per test process
"""

from __future__ import annotations

import functools
from pathlib import Path

import wasmtime

SOURCES = Path(__file__).resolve().parent.parent.parent / "examples" / "components"

# hello (HTTP, config GREETING), greeter (exports driftless:demo/greeter), frontend (imports it),
# spin (busy loop), hog (grows memory), slow (works WORK million iterations), job (wasi:cli/run)
EXAMPLES: tuple[str, ...] = tuple(sorted(p.stem for p in SOURCES.glob("*.wat")))


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def variant(name: str, label: str) -> bytes:
    """``build(name)`` plus a custom section carrying ``label``: the same behaviour, another digest
    (for tests of digest changes and rolling replacement)."""
    section_name = b"driftless-variant"
    payload = _leb128(len(section_name)) + section_name + label.encode()
    return build(name) + b"\x00" + _leb128(len(payload)) + payload


@functools.cache
def build(name: str) -> bytes:
    """The component ``name`` as Wasm bytes (compiled from its WAT source)."""
    source = SOURCES / f"{name}.wat"
    if not source.is_file():
        raise KeyError(f"no example component {name!r}; known: {', '.join(EXAMPLES)}")
    return wasmtime.wat2wasm(source.read_text())
