"""Shared helpers for the manifest-model tests."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
EXAMPLE_MANIFESTS = REPO_ROOT / "manifests"
GOOD_TREES = sorted(p for p in (FIXTURES / "good").iterdir() if p.is_dir())
