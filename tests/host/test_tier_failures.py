"""Bad input on the tiered path: a compile that fails says which component, digest and wasmtime error, and
what served keeps serving - the Winch build when the Cranelift build fails after it served, the previous
version when neither tier compiles a new one. And the background (optimised) compile yields the CPU and
never outlives its host.

No component exists that Winch compiles and Cranelift refuses (Winch does a subset), so the failures
come from the real wasmtime fed a truncated copy of the component (what a torn read would give it), by a
wrapper named with $DRIFTLESS_WASMTIME for the compiles of one digest: wasmtime's own error, end to end.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.host.test_compile_cache import Load, log_text
from tests.support.procs import wait_until
from tests.support.standard import standard_component, wasmtime_cli, wat_variant

TORN = re.compile(r"failed to parse WebAssembly module: .*(out of bounds|end-of-file|unexpected end)")
HARMLESS = "(func $unused (result i32) (i32.const 7))"  # another digest, the same behaviour

WRAPPER = """#!{python}
# wasmtime, except that `compile` of the digest {digest} ({compilers}) reads a truncated copy of the component
import os, sys
real, args = {real!r}, sys.argv[1:]
if args[:1] == ["compile"] and {digest!r} in " ".join(args) and \\
        ("winch" if "compiler=winch" in " ".join(args) else "cranelift") in {compilers!r}:
    source = args[-1]
    with open(source, "rb") as f:
        data = f.read()
    with open(source + ".torn", "wb") as f:
        f.write(data[: len(data) // 2])
    args[-1] = source + ".torn"
os.execv(real, [real, *args])
"""


def breaking(tmp_path: Path, digest: str, compilers: tuple[str, ...]) -> dict[str, str]:
    """The environment of a host whose wasmtime compiles of ``digest`` with ``compilers`` fail."""
    path = tmp_path / "wasmtime-breaking"
    path.write_text(WRAPPER.format(python=sys.executable, real=str(wasmtime_cli()), digest=digest.split(":")[1],
                                   compilers=compilers))
    path.chmod(0o755)
    return {"DRIFTLESS_WASMTIME": str(path)}


def compile_processes(under: Path) -> list[tuple[int, int]]:
    """(pid, nice) of the `wasmtime compile` processes writing under ``under``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if "compile" in argv and any(a.startswith(str(under)) for a in argv):
            out.append((int(pid), int(stat.rsplit(")", 1)[1].split()[16])))  # field 19: nice
    return out


def test_an_optimised_build_that_fails_after_the_fast_one_served_leaves_it_serving_with_the_error(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = registry.push("cranelift-fails", standard_component("http-hello-wat").read_bytes())
    digest = image.rpartition("@")[2]
    for key, value in breaking(tmp_path, digest, ("cranelift",)).items():
        monkeypatch.setenv(key, value)
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired), "--fast-tier-above", "0") as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        with Load(host.url + "/hello") as load:
            status = wait_until(lambda: (i := host.instances()["dev/demo/web/0"])["lastError"] and i, timeout=60,
                                what="the optimised build's failure reported")
            seen = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= seen + 20, timeout=30, what="requests after the failure")
        assert load.failures == [], load.failures[:5]
        assert status["status"] == "Running"
        error = status["lastError"]
        assert "still serving the fast (Winch) build" in error
        assert "dev/demo/web" in error and digest in error and "(cranelift)" in error
        assert TORN.search(error), error  # wasmtime's own words, its cause included
        assert "swapped to the optimised" not in log_text(host)


def test_a_new_version_neither_tier_compiles_fails_naming_it_and_the_previous_version_serves(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = registry.push("no-tier", standard_component("http-hello-wat").read_bytes(), tag="1")
    bad = registry.push("no-tier", wat_variant("http-hello-wat", HARMLESS, work=tmp_path / "wat"), tag="2")
    digest = bad.rpartition("@")[2]
    for key, value in breaking(tmp_path, digest, ("winch", "cranelift")).items():
        monkeypatch.setenv(key, value)
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(good, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired), "--fast-tier-above", "0") as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        with Load(host.url + "/hello") as load:
            wait_until(lambda: len(load.statuses) >= 20, timeout=30, what="requests to the good version")
            write_desired(desired, 2, [instance(bad, component="web", route="/hello")])
            failed = host.wait_status("dev/demo/web/0", "Failed", timeout=60)
            seen = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= seen + 20, timeout=30, what="requests after the failure")
        assert load.failures == [], load.failures[:5]
        error = failed["lastError"]
        assert failed["digest"] == digest
        assert "dev/demo/web" in error and digest in error and "(cranelift)" in error, error
        assert TORN.search(error), error
        assert f"still serving the previous version {good.rpartition('@')[2][:19]}" in error, error
        assert "(winch)" in log_text(host) and "fast (Winch) build was refused" in log_text(host)


@pytest.mark.timeout(300)
def test_the_background_compile_runs_at_the_lowest_priority_and_stops_with_its_host(
    tmp_path: Path, registry: Registry
) -> None:
    image = registry.push("background", standard_component("js-hello").read_bytes())  # 13 MB: seconds of Cranelift
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/js")])
    host = start_host(tmp_path, "--desired", str(desired))
    try:
        host.wait_status("dev/demo/web/0", "Running", timeout=120)  # from its Winch build
        running = wait_until(lambda: compile_processes(host.data) or "swapped to the optimised" in log_text(host),
                             timeout=60, what="the optimised build compiling")
        if running is True:
            pytest.skip("the optimised build finished before it was seen (a very fast machine)")
        assert all(nice == 19 for _, nice in running), running
    finally:
        host.proc.stop()
    wait_until(lambda: compile_processes(host.data) == [], timeout=10, what="no compile left behind")
