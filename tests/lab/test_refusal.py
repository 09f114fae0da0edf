"""Where network namespaces cannot be made the lab refuses to start and says why (exit 2), so CI
fails rather than skips; here: hack/lab/run started as an unprivileged user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hack.lab import netns

TOP = Path(__file__).resolve().parents[2]


def test_the_lab_refuses_to_start_without_the_rights_to_make_namespaces() -> None:
    before = netns.existing()
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                        str(TOP / "hack" / "lab" / "run"), "up", "--root", "/nonexistent/lab"],
                       capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the lab cannot start here: the lab needs root" in r.stderr
    assert netns.existing() == before  # it made nothing
