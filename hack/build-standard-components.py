#!/usr/bin/env python3
"""Build the standard components (examples/standard/*) with pinned toolchains, cached by source hash.

    hack/build-standard-components.py                    # all; one line each: built / cached, size, seconds
    hack/build-standard-components.py --only py-hello    # just one (repeatable)
    hack/build-standard-components.py --print-paths      # JSON {name: path} on stdout

Outputs: ${XDG_CACHE_HOME:-~/.cache}/driftless/components/<name>-<hash>.wasm. A thin wrapper: the logic
lives in examples/standard/build.py (shared with tests/support/standard.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILD = Path(__file__).resolve().parent.parent / "examples" / "standard" / "build.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("driftless_standard_build", BUILD)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BUILD}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load().main())
