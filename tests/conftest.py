"""Project-wide pytest wiring: print the logs of every real process a failed test started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import procs


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and procs.STARTED:
        for p in procs.STARTED[-8:]:
            report.sections.append((f"log of {p.name} ({' '.join(p.args[:3])})", p.log()[-8000:]))
