"""Small things users hit with the CLI, each run as a user would (a real `driftless` process): a closed
pipe is no error, `-o json` times are ISO 8601, `driftless push` wants a tag, `driftless logs` shows and
follows the logs `driftless up` writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftless.commands.status import iso_times

ROOT = Path(__file__).resolve().parent.parent


def _driftless(*args: str, data: Path | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    if data is not None:
        env["DRIFTLESS_DATA"] = str(data)
    return subprocess.run([sys.executable, "-m", "driftless", *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env=env, **kw)  # type: ignore[call-overload,no-any-return]


def test_a_reader_that_stops_early_is_no_error() -> None:
    """`driftless ... -o json | head -1`: the reader closes the pipe; no BrokenPipeError, exit 0."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "driftless", "validate", "manifests", "-o", "json"], cwd=ROOT,
                            stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_json_times_are_iso_8601() -> None:
    doc = {"applied": {"revision": "abc", "appliedAt": 1796144360.6041744}, "healthySince": 1796144363,
           "events": [{"at": 1796144389.5, "id": 7}], "lastReconcile": {"at": 1796144389.0, "seconds": 0.25},
           "hosts": [{"lastSeen": 1796144390.0, "registeredAt": None, "observedGeneration": 3}]}
    assert iso_times(doc) == {
        "applied": {"revision": "abc", "appliedAt": "2026-12-01T16:59:20.604Z"}, "healthySince": "2026-12-01T16:59:23.000Z",
        "events": [{"at": "2026-12-01T16:59:49.500Z", "id": 7}],
        "lastReconcile": {"at": "2026-12-01T16:59:49.000Z", "seconds": 0.25},
        "hosts": [{"lastSeen": "2026-12-01T16:59:50.000Z", "registeredAt": None, "observedGeneration": 3}]}


def test_push_without_a_tag_refuses() -> None:
    r = _driftless("push", "demo/hello", "examples/components/hello.wat", "--registry", "http://127.0.0.1:9")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "demo/hello has no tag: give one, e.g. demo/hello:1.0.0" in r.stderr and "Traceback" not in r.stderr


def test_logs_shows_each_process_and_follows(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "reconciler.log").write_text("".join(f"reconciler line {i}\n" for i in range(30)))
    (logs / "host-edge-1.log").write_text("edge line 1\nedge line 2\n")
    r = _driftless("logs", "-n", "2", data=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["host-edge-1 | edge line 1", "host-edge-1 | edge line 2",
                                     "reconciler  | reconciler line 28", "reconciler  | reconciler line 29"]
    r = _driftless("logs", "--host", "edge-1", data=tmp_path)
    assert r.stdout == "edge line 1\nedge line 2\n"
    r = _driftless("logs", "--host", "nope", data=tmp_path)
    assert r.returncode == 2 and "no log for host nope" in r.stderr and "hosts: edge-1" in r.stderr
    r = _driftless("logs", data=tmp_path / "elsewhere")
    assert r.returncode == 2 and "no logs in" in r.stderr

    # --follow: what a process adds (and the log of one started later), as it comes
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    follow = subprocess.Popen([sys.executable, "-m", "driftless", "logs", "--follow", "-n", "0"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**env, "DRIFTLESS_DATA": str(tmp_path)})
    try:
        time.sleep(1.0)
        with open(logs / "host-edge-1.log", "a") as f:
            f.write("edge line 3\nedge li")
            f.flush()
            time.sleep(0.5)
            f.write("ne 4\n")
        time.sleep(0.5)
        (logs / "host-aws.log").write_text("aws started\n")
        time.sleep(1.5)
    finally:
        follow.terminate()
        out, _ = follow.communicate(timeout=10)
    assert out.splitlines() == ["host-edge-1 | edge line 3", "host-edge-1 | edge line 4",
                                "host-aws    | aws started"], out


def test_the_status_table_shows_a_rejection_at_file_line() -> None:
    from driftless.commands.status import render

    errors = [{"file": "dev/apps/hello.yaml", "line": 12 + i, "column": 5, "message": "bad",
               "text": f"dev/apps/hello.yaml:{12 + i}:5: error: bad"} for i in range(7)]
    text = render(source={"repo": "r", "branch": "main", "path": "manifests",
                          "applied": {"revision": "a" * 40, "appliedAt": 1.0},
                          "rejected": {"revision": "b" * 40, "errors": errors}}, environments=[], hosts=[])
    lines = text.splitlines()
    assert "head bbbbbbbbbbbb REJECTED" in lines[0]
    assert lines[1:6] == [f"  dev/apps/hello.yaml:{12 + i}:5: error: bad" for i in range(5)]
    assert lines[6] == "  ... and 2 more (driftless status -o json)"


def test_host_help_shows_exec_as_a_subcommand() -> None:
    """`driftless host --help` reads as two forms (the agent, and the `host exec` subcommand), not as an
    agent taking a positional argument `exec`."""
    r = _driftless("host", "--help")
    assert r.returncode == 0, r.stderr
    assert "positional arguments" not in r.stdout, r.stdout
    assert "driftless host exec --admin URL" in r.stdout and "subcommand:" in r.stdout, r.stdout
    r = _driftless("host", "exec", "--help")
    assert r.returncode == 0 and "ls" in r.stdout and "run" in r.stdout, r.stdout


def test_the_gates_table_fits_the_longest_gate_name(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from driftless.commands.promote import print_gates

    gates = [{"name": "synced", "passed": True, "message": "Synced"},
             {"name": "no-new-capabilities", "passed": False, "message": "none new"},
             {"name": "min-soak", "passed": True, "message": "healthy for 40s of the 30s"}]
    monkeypatch.setenv("NO_COLOR", "1")
    print_gates(gates)
    lines = capsys.readouterr().out.splitlines()[1:]
    # every message starts in the same column, after the longest name and two spaces
    columns = {line.index(g["message"]) for line, g in zip(lines, gates, strict=True)}
    assert len(columns) == 1, lines
    assert "no-new-capabilities  none new" in lines[1], lines


def test_dashboard_opens_the_sign_in_link_or_prints_it(tmp_path: Path) -> None:
    """`driftless dashboard` opens http://RECONCILER/#token=... with the browser python's webbrowser finds
    ($BROWSER here: a script that records what it was asked to open); without a browser it prints it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin-token").write_text("tok/en+1\n")
    (data / "up.json").write_text(json.dumps({"reconciler": "http://127.0.0.1:18080",
                                              "credentialFile": str(data / "admin-token")}))
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > {opened}\n")
    browser.chmod(0o755)
    link = "http://127.0.0.1:18080/#token=tok%2Fen%2B1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_") and k != "DISPLAY"}
    r = subprocess.run([sys.executable, "-m", "driftless", "dashboard"], capture_output=True, text=True, timeout=30,
                       env={**env, "DRIFTLESS_DATA": str(data), "BROWSER": str(browser)})
    assert r.returncode == 0, r.stderr
    assert opened.read_text() == link and "opened the dashboard http://127.0.0.1:18080/" in r.stdout
    assert "tok" not in r.stdout  # opened, not shown
    r = subprocess.run([sys.executable, "-m", "driftless", "dashboard"], capture_output=True, text=True, timeout=30,
                       env={**env, "DRIFTLESS_DATA": str(data), "BROWSER": "false"})  # a browser that fails
    assert r.returncode == 0 and f"  {link}" in r.stdout, r.stdout
    r = _driftless("dashboard", "--print", data=data)
    assert r.returncode == 0 and f"  {link}" in r.stdout, r.stdout
