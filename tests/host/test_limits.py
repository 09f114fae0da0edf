"""Isolation and limits with a real host process: fuel, wall-time deadline, memory, concurrency.
Each limit hit answers 503 with a reason, counts a restart, and the host keeps serving the others."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.host.conftest import instance, start_host, write_desired
from tests.support.procs import wait_until


def test_limits_answer_503_with_a_reason_and_the_host_lives_on(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [
            instance(images["hello"], component="web", route="/hello"),
            instance(images["spin"], component="fuel", route="/fuel", limits={"fuel": 5_000_000}),
            instance(images["spin"], component="deadline", route="/deadline", limits={"timeoutMs": 200}),
            instance(images["hog"], component="hog", route="/hog", limits={"memoryBytes": 4 << 20}),
        ],
    )
    # a small address-space reservation per memory: memories grow past it by moving, limits still hold
    with start_host(tmp_path, "--desired", str(desired), "--memory-reservation", "1Mi") as host:
        for component in ("web", "fuel", "deadline", "hog"):
            host.wait_status(f"dev/demo/{component}/0", "Running")

        r = host.get("/fuel")
        assert r.status_code == 503
        assert r.json()["reason"] == "fuel"
        assert "ran out of fuel" in r.json()["error"]

        r = host.get("/deadline")
        assert r.status_code == 503
        assert r.json()["reason"] == "deadline"
        assert "200 ms" in r.json()["error"]

        r = host.get("/hog")
        assert r.status_code == 503
        assert r.json()["reason"] == "memory"
        assert str(4 << 20) in r.json()["error"]

        # the trapped instances were replaced by fresh ones: they answer (and trap) again, not "poisoned"
        r = host.get("/fuel")
        assert (r.status_code, r.json()["reason"]) == (503, "fuel")
        assert host.get("/hello").text == "hello from /hello"

        report = host.instances()
        assert report["dev/demo/fuel/0"]["restarts"] == 2
        assert "fuel" in report["dev/demo/fuel/0"]["lastError"]
        assert report["dev/demo/deadline/0"]["restarts"] == 1
        assert report["dev/demo/hog/0"]["restarts"] == 1
        assert report["dev/demo/web/0"]["restarts"] == 0
        assert host.proc.alive()


def test_repeated_traps_put_an_instance_in_backoff(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["spin"], component="spin", route="/spin", limits={"fuel": 1_000_000})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/spin/0", "Running")
        reasons = [host.get("/spin").json()["reason"] for _ in range(6)]
        assert reasons[:5] == ["fuel"] * 5
        assert reasons[5] == "backoff"
        status = host.instances()["dev/demo/spin/0"]
        assert status["status"] == "BackOff"
        assert status["restarts"] == 5


def test_max_concurrency_refuses_the_extra_call(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [instance(images["slow"], component="slow", route="/slow", config={"WORK": "4000"}, limits={"maxConcurrency": 1})],
    )
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/slow/0", "Running")
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(host.get("/slow", timeout=60)))
        t.start()
        wait_until(lambda: host.admin_get("/api/v1/status")["inflight"] == 1, timeout=10, what="call in flight")
        r = host.get("/slow")
        assert r.status_code == 503
        assert r.json()["reason"] == "concurrency"
        t.join(60)
        assert first[0].status_code == 200
        assert first[0].text == "done"
