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
# spin (busy loop), hog (grows memory), job (wasi:cli/run)
EXAMPLES: tuple[str, ...] = tuple(sorted(p.stem for p in SOURCES.glob("*.wat")))


@functools.cache
def build(name: str) -> bytes:
    """The component ``name`` as Wasm bytes (compiled from its WAT source)."""
    source = SOURCES / f"{name}.wat"
    if not source.is_file():
        raise KeyError(f"no example component {name!r}; known: {', '.join(EXAMPLES)}")
    return wasmtime.wat2wasm(source.read_text())
