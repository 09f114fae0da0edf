"""The holes of the "Trust" review, each against a real reconciler process: out-of-range long-poll
parameters, the watcher firing on our own fetches, a missing tag retried in a tight loop, Git and
registry calls without a deadline, and credentials of a ``--repo`` URL shown to whoever asks.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reconciler.simhost import SimHost
from tests.support.components import build
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import DriftlessProcess, free_port, wait_until


def app(name: str, image: str, replicas: int = 1) -> str:
    return application(name, [{"name": "w", "image": image, "placement": {"spread": {"replicas": replicas}}}])


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample of GET /metrics (``labels`` as rendered, e.g. ``result="rejected"``)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in /metrics:\n{text}")


def get(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{path}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()


@pytest.fixture()
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never answers: a server that hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def test_watcher_long_poll_range_and_missing_tag(tmp_path: Path) -> None:
    p: LocalPlatform = local_platform(tmp_path)
    p.prepare()
    p.start_registry()
    p.registry.push("demo/hello:1.0.0", build("hello"))
    p.seed({"prod/environment.yaml": environment("prod"), "prod/apps/a.yaml": app("a", "demo/hello:1.0.0")})
    git = p.git
    # no post-receive hook: only the reconciler's own watch of the repository can notice a push
    (p.git_dir / "hooks" / "post-receive").unlink()
    host: SimHost | None = None
    try:
        p.start_reconciler()
        url = p.control_url
        host = SimHost(control=url, token=p.token(), name="h1", labels={}).start()
        wait_until(lambda: host.doc is not None and len(host.doc.instances) == 1, timeout=15, what="h1 converged")

        # 2. the watcher: no push, (almost) no fetch; a push, a fetch at once
        before = metric(url, "driftless_git_fetch_total")
        time.sleep(5)
        quiet = metric(url, "driftless_git_fetch_total") - before
        assert quiet <= 2, f"{quiet} fetches in 5 s without a push"
        rev = git.push({"prod/apps/a.yaml": app("a", "demo/hello:1.0.0", replicas=2)}, "two replicas")
        pushed = time.monotonic()
        wait_until(lambda: get(url, "/api/v1/environments/prod")["revision"] == rev, timeout=5,
                   what="the push applied (watcher, no hook, interval 30 s)")
        assert time.monotonic() - pushed < 5
        assert metric(url, "driftless_git_fetch_total") - before - quiet <= 3

        # 1. out-of-range long-poll parameters: 400 saying why; the host keeps getting generations
        auth = {"Authorization": f"Bearer {p.token()}"}
        gen = get(url, "/api/v1/hosts/h1")["generation"]
        for query, word in ((f"after={2**63}", "after"), (f"after={10**30}", "after"), ("after=-1", "after"),
                            ("after=1&wait=nan", "wait"), ("after=1&wait=-5", "wait"), ("after=1&wait=inf", "wait")):
            r = httpx.get(f"{url}/api/v1/hosts/h1/desired?{query}", headers=auth, timeout=10)
            assert r.status_code == 400, (query, r.status_code, r.text)
            assert word in r.json()["error"] and "out of range" in r.json()["error"], r.text
        bad_report = {"name": "h1", "observedGeneration": 2**63, "instances": []}
        r = httpx.post(f"{url}/api/v1/hosts/h1/report", json=bad_report, headers=auth, timeout=10)
        assert r.status_code in (400,), r.text
        git.push({"prod/apps/a.yaml": app("a", "demo/hello:1.0.0", replicas=3)}, "three replicas")
        wait_until(lambda: get(url, "/api/v1/hosts/h1")["generation"] > gen, timeout=10, what="a new generation")
        wait_until(lambda: host.doc is not None and host.doc.generation > gen and len(host.doc.instances) == 3,
                   timeout=10, what="h1 received the new generation")
        assert get(url, "/api/v1/hosts/h1")["generation"] < 2**53

        # 3. a missing tag: one Rejected event, a handful of retries, applied once the tag is pushed
        missing = git.push({"prod/apps/a.yaml": app("a", "demo/hello:9.9.9", replicas=3)}, "a tag not pushed yet")
        wait_until(lambda: (get(url, "/api/v1/environments")["source"]["rejected"] or {}).get("revision") == missing,
                   timeout=10, what="the revision rejected")
        rejected_before = metric(url, "driftless_reconcile_total", 'result="rejected"')
        time.sleep(5)
        retries = metric(url, "driftless_reconcile_total", 'result="rejected"') - rejected_before
        events = get(url, "/api/v1/events", limit=1000)["events"]
        rejections = [e for e in events if e["reason"] == "Rejected" and e["revision"].startswith(missing[:12])]
        assert len(rejections) == 1, rejections
        assert "9.9.9" in rejections[0]["message"]
        assert 1 <= retries <= 8, f"{retries} retries in 5 s"
        p.registry.push("demo/hello:9.9.9", build("hello"))
        wait_until(lambda: get(url, "/api/v1/environments/prod")["revision"] == missing, timeout=40,
                   what="the revision applied at the next retry once its tag exists")
        assert get(url, "/api/v1/environments")["source"]["rejected"] is None
        log = p.running["reconciler"].log()
        assert "OverflowError" not in log and "Traceback" not in log
    finally:
        if host is not None:
            host.stop()
        p.stop()


def test_tags_resolve_concurrently_within_a_deadline(tmp_path: Path, hanging_port: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that accepts connections and never answers: the resolve step gives up after its
    deadline, all tags asked at once (6 tags x 1 s one after another would take 6 s)."""
    monkeypatch.setenv("DRIFTLESS_REGISTRY_TIMEOUT", "1")
    p = local_platform(tmp_path, external_registry=f"http://127.0.0.1:{hanging_port}")
    p.prepare()
    p.seed({"prod/environment.yaml": environment("prod"),
            **{f"prod/apps/a{i}.yaml": app(f"a{i}", f"demo/app{i}:1.0.0") for i in range(6)}})
    try:
        p.start_reconciler()
        source = wait_until(lambda: (s := get(p.control_url, "/api/v1/environments")["source"])["lastError"] and s,
                            timeout=15, what="the resolve step failed")
        assert "not reachable" in source["lastError"] or "did not resolve" in source["lastError"], source
        assert source["lastReconcile"]["seconds"] < 4, source["lastReconcile"]
        assert httpx.get(f"{p.control_url}/healthz", timeout=2).status_code == 200
    finally:
        p.stop()


def start_reconciler(tmp_path: Path, repo: str, *, env: dict[str, str] | None = None) -> DriftlessProcess:
    token = tmp_path / "token"
    token.write_text("join-token-of-the-test")
    port = free_port()
    return DriftlessProcess(
        ["reconcile", "--repo", repo, "--data", str(tmp_path / "rec"), "--registry", "http://127.0.0.1:9",
         "--token-file", str(token), "--listen", f"127.0.0.1:{port}", "--interval", "30"],
        log_dir=tmp_path, ready_url=f"http://127.0.0.1:{port}/healthz", env=env, name="reconciler",
    ).start()


def test_git_fetch_has_a_deadline(tmp_path: Path, hanging_port: int) -> None:
    rec = start_reconciler(tmp_path, f"http://127.0.0.1:{hanging_port}/x.git", env={"DRIFTLESS_GIT_TIMEOUT": "2"})
    try:
        url = rec.ready_url.removesuffix("/healthz") if rec.ready_url else ""
        started = time.monotonic()
        source = wait_until(lambda: (s := get(url, "/api/v1/environments")["source"])["lastError"] and s,
                            timeout=15, what="the fetch timed out")
        assert "did not finish within 2s" in source["lastError"], source
        assert time.monotonic() - started < 8
        assert metric(url, "driftless_git_fetch_errors_total") >= 1
    finally:
        rec.stop()


def test_credentials_in_the_repo_url_are_never_shown(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens: each fetch fails with an error naming the URL
    rec = start_reconciler(tmp_path, f"http://user:s3cr3t-hunter2@127.0.0.1:{dead}/x.git")
    try:
        url = rec.ready_url.removesuffix("/healthz") if rec.ready_url else ""
        wait_until(lambda: metric(url, "driftless_git_fetch_errors_total") >= 2, timeout=15, what="failed fetches")
        source = get(url, "/api/v1/environments")["source"]
        assert source["repo"] == f"http://***@127.0.0.1:{dead}/x.git", source
        assert source["lastError"] and f"127.0.0.1:{dead}" in source["lastError"], source
        events = get(url, "/api/v1/events", limit=1000)["events"]
        failed = [e for e in events if e["reason"] == "FetchFailed"]
        assert len(failed) == 1, failed  # one event for the outage, not one per retry
        assert "***@" in failed[0]["message"]
        bodies = {path: httpx.get(f"{url}{path}", timeout=5).text for path in (
            "/api/v1/environments", "/api/v1/events?limit=1000", "/api/v1/hosts", "/api/v1/history", "/api/v1/drift",
            "/api/v1/plan-inputs", "/metrics", "/readyz", "/healthz")}
        for path, body in bodies.items():
            assert "s3cr3t-hunter2" not in body, (path, body)
        assert json.loads(bodies["/api/v1/environments"])["source"]["repo"].startswith("http://***@")
    finally:
        rec.stop()
    log = rec.log()
    assert re.search(r"cannot fetch", log), log
    assert "s3cr3t-hunter2" not in log, log
