"""Compiled cache (a second start of a digest skips compilation; bounded, LRU) and static stability
(a restarted host serves its last desired state without a reconciler or a registry)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from host.cache import CompiledCache
from tests.host.conftest import instance, start_host, write_desired
from tests.support.procs import free_port


def test_second_start_of_a_digest_skips_compilation_and_restart_recovers_without_reconciler(
    tmp_path: Path, images: dict[str, str]
) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["hello"], component="web", route="/hello", config={"GREETING": "yo"})])
    data = tmp_path / "data"
    with start_host(tmp_path, "--desired", str(desired), data=data) as host:
        host.wait_status("dev/demo/web/0", "Running")
        status = host.admin_get("/api/v1/status")
        assert (status["compilations"], status["cacheHits"]) == (1, 0)
        assert status["cache"]["entries"] == 1
    assert (data / "desired.json").exists()

    # restart with an unreachable reconciler: the saved desired state is served from the compiled cache
    dead = f"http://127.0.0.1:{free_port()}"
    with start_host(tmp_path, "--control", dead, data=data) as host:
        host.wait_status("dev/demo/web/0", "Running")
        assert host.get("/hello").text == "yo from /hello"
        status = host.admin_get("/api/v1/status")
        assert (status["compilations"], status["cacheHits"]) == (0, 1)
        assert status["connected"] is False
        assert status["observedGeneration"] == 1
        assert host.proc.alive()


def test_cache_is_keyed_by_engine_and_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = CompiledCache(root=tmp_path, engine_key="wasmtime 50; fuel=1", max_bytes=250)
    other_engine = CompiledCache(root=tmp_path, engine_key="wasmtime 51; fuel=1", max_bytes=250)
    assert cache.dir != other_engine.dir
    a, b, c = (f"sha256:{ch * 64}" for ch in "abc")
    cache.store(a, b"a" * 100)
    cache.store(b, b"b" * 100)
    past = time.time() - 60
    os.utime(cache.path_for(a), (past, past))
    os.utime(cache.path_for(b), (past - 10, past - 10))
    assert cache.lookup(b) is not None  # b is now the most recently used
    cache.store(c, b"c" * 100)  # 300 > 250: the least recently used (a) goes
    assert cache.lookup(a) is None
    assert cache.lookup(b) is not None and cache.lookup(c) is not None
    assert cache.size_bytes() == 200
    assert other_engine.lookup(b) is None
