#!/usr/bin/env python3
"""Compile every examples/components/*.wat into a real component (.wasm) beside it.

Idempotent and fast: a .wasm newer than its .wat is left alone. Prints one line per component built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import wasmtime

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "components"


def main() -> int:
    failed = 0
    for wat in sorted(EXAMPLES.glob("*.wat")):
        wasm = wat.with_suffix(".wasm")
        if wasm.exists() and wasm.stat().st_mtime >= wat.stat().st_mtime:
            continue
        try:
            data = wasmtime.wat2wasm(wat.read_text())
        except wasmtime.WasmtimeError as exc:
            print(f"{wat}: {exc}", file=sys.stderr)
            failed += 1
            continue
        tmp = wasm.with_suffix(".wasm.tmp")
        tmp.write_bytes(data)
        tmp.replace(wasm)
        print(f"built {wasm.relative_to(EXAMPLES.parent.parent)} ({len(data)} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
