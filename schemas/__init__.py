"""JSON Schemas (2020-12), one per manifest kind: ``environment.json``, ``application.json``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent


@cache
def load(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` ("Environment" or "Application")."""
    return json.loads((SCHEMA_DIR / f"{kind.lower()}.json").read_text())
