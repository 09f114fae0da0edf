"""The lab of network namespaces (hack/lab), started once for the module that uses it and stopped,
with every process and namespace, at the end. Where namespaces cannot be made the fixture fails
(it never skips): CI must run these tests. LAB_CUT_SECONDS sets the edge cut (default 30 s)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.lab import netns, scenario
from hack.lab.lab import Lab
from hack.lab.results import Results

CUT_SECONDS = float(os.environ.get("LAB_CUT_SECONDS", "30"))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="driftless-lab-"))
    lab = Lab(root, heartbeat=1.0, say=lambda _: None)
    try:
        lab.start(scenario.tree(), scenario.components())
        yield lab
    except BaseException:
        for proc in lab.procs.running.values():
            print(f"--- {proc.name} ({proc.log}) ---\n{proc.log_text()[-4000:]}")
        raise
    finally:
        lab.stop()
        leftover = netns.existing()
        assert leftover == [], f"namespaces left behind: {leftover}"
        assert not any(p.alive() for p in lab.procs.running.values())


@pytest.fixture(scope="module")
def results() -> Iterator[Results]:
    r = Results()
    yield r
    r.write()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each lab process's last lines when a test on the lab failed (the lab lives on for the next test)."""
    yield
    if "lab" in request.fixturenames and request.node.stash.get(FAILED, False):
        lab: Lab = request.getfixturevalue("lab")
        for proc in lab.procs.running.values():
            print(f"--- {proc.name} ({proc.log}) ---\n{proc.log_text()[-2500:]}")
