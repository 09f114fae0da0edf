"""Project-wide pytest wiring: print the logs of every real process a failed test started, and fail the
run when a test left a process behind (tests/support/leftovers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import leftovers, procs


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and procs.STARTED:
        for p in procs.STARTED[-8:]:
            report.sections.append((f"log of {p.name} ({' '.join(p.args[:3])})", p.log()[-8000:]))


def pytest_sessionstart(session: pytest.Session) -> None:
    leftovers.mark_this_run()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every fixture is torn down by now: whatever of this run still runs was left behind by a test."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    temp_dir = str(factory.getbasetemp()) if factory is not None and factory._basetemp is not None else ""
    found = leftovers.settle(root=os.getpid(), mark=os.environ[leftovers.MARK], temp_dir=temp_dir)
    if not found:
        return
    leftovers.kill(found)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["a test left these processes running (now killed); every test must stop what it starts:",
             *(f"  {p}" for p in found)]
    if reporter is not None:
        reporter.write_sep("=", "processes left behind", red=True)
        for line in lines:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
