"""The figures of the lab's faults, written to hack/lab/RESULTS.md by the lab tests run with LAB_RECORD=1."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Results:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(self, fault: str, *, detect: str, recover: str, failed: str, notes: str = "") -> None:
        self.rows.append((fault, detect, recover, failed, notes))

    def write(self) -> None:
        if not self.rows or not os.environ.get("LAB_RECORD"):  # a test run leaves the checkout as it was
            return
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            "# Lab figures",
            "",
            f"Measured by `pytest tests/lab` on {when} (heartbeat 1 s, lease 3 s, Lost after 3 missed",
            "heartbeats; see docs/lab.md). Requests: a client loop inside the site, one GET every 0.1 s,",
            "1 s timeout.",
            "",
            "| fault | time to detect | time to recover | requests failed during the fault | notes |",
            "|---|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in self.rows),
            "",
        ]
        RESULTS.write_text("\n".join(lines))
