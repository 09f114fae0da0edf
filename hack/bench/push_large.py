#!/usr/bin/env python3
"""Push a large Wasm component (~18 MB, componentize-py output) and measure push time and registry RSS,
with the component inspector of today (wasm-tools) and the one it replaced (wasmtime compiles the component:
Cranelift, no optimisation).

    python hack/bench/push_large.py [--runs 3] [--wasm FILE] [--record]

Each push goes to a fresh `driftless registry serve` process (empty root: no stored inspection record to
reuse) from a fresh client process (`shared.registry_client.push_component`, which inspects the component
too, to write the CNCF wasm config). For "wasmtime (before)", both processes have `shared.wasm`'s
inspector replaced by the pre-wasm-tools code kept below (`old_inspect`); nothing else differs.

Figures, median over --runs: client inspection (building the artifact), upload + manifest PUT (the
registry inspects during the PUT), total push; the registry's peak RSS (VmHWM) after the push and its
idle RSS before it; the client's peak RSS and that of its wasm-tools subprocesses (the registry runs the
same two wasm-tools commands, each a short-lived process of its own: not in the registry's VmHWM). Without --wasm, the component is `hack/build-standard-components.py --only py-hello`
(built and cached on first use: needs the pinned componentize-py, installed by that script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _processes import free_port, wait_ready  # hack/bench/_processes.py (scripts run from hack/bench)

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODES = ("wasmtime", "wasm-tools")
LABELS = {"wasmtime": "wasmtime compile (before)", "wasm-tools": "wasm-tools (after)"}


# --- the inspector before wasm-tools (shared/wasm.py up to 2026-12-01), kept to measure it ----------------

_old_engine: Any = None


def old_inspect(data: bytes) -> Any:
    """What shared.wasm.inspect_wasm did before: compile with wasmtime to read the imports and exports."""
    global _old_engine
    import wasmtime
    import wasmtime.component

    from shared.wasm import CORE_VERSION, WASM_MAGIC, InvalidWasm, WasmInfo, infer_worlds

    if len(data) < 8 or data[:4] != WASM_MAGIC:
        raise InvalidWasm("not WebAssembly")
    if _old_engine is None:
        config = wasmtime.Config()
        config.cranelift_opt_level = "none"
        config.wasm_component_model = True
        _old_engine = wasmtime.Engine(config)
    if data[4:8] == CORE_VERSION:
        try:
            module = wasmtime.Module(_old_engine, bytes(data))
        except wasmtime.WasmtimeError as exc:
            raise InvalidWasm(f"invalid core Wasm module: {exc}") from None
        return WasmInfo(kind="module", imports=[f"{i.module}#{i.name}" for i in module.imports],
                        exports=[e.name for e in module.exports])
    try:
        component = wasmtime.component.Component(_old_engine, bytes(data))
    except wasmtime.WasmtimeError as exc:
        raise InvalidWasm(f"invalid Wasm component: {exc}") from None
    exports = list(component.type.exports(_old_engine))
    return WasmInfo(kind="component", imports=list(component.type.imports(_old_engine)), exports=exports,
                    worlds=infer_worlds(exports))


def install_old_inspector() -> None:
    """Replace the inspector in this process (client and registry both call it through these names)."""
    import registry.store
    import shared.wasm

    shared.wasm.inspect_wasm = old_inspect

    def old_inspect_file(path: str | os.PathLike[str]) -> Any:
        return old_inspect(Path(path).read_bytes())

    shared.wasm.inspect_wasm_file = old_inspect_file
    registry.store.inspect_wasm = old_inspect  # type: ignore[attr-defined]
    registry.store.inspect_wasm_file = old_inspect_file  # type: ignore[attr-defined]


# --- child processes ----------------------------------------------------------------------------------------


def _registry_child(mode: str, root: str, port: int) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    if mode == "wasmtime":
        install_old_inspector()
    from driftless.cli import main

    return main(["registry", "serve", "--root", root, "--listen", f"127.0.0.1:{port}"])


def _push_child(mode: str, url: str, wasm_path: str) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    if mode == "wasmtime":
        install_old_inspector()
    from shared import registry_client as client

    wasm = Path(wasm_path).read_bytes()
    # client.push_component, step by step, to time the client's inspection apart from the upload
    started = time.perf_counter()
    t = client.target("bench/large:1.0.0", registry_url=url)
    config, manifest, _ = client.wasm_artifact(wasm)
    inspected = time.perf_counter()
    with client._session(t, None, False) as session:
        client.push_blob(session, t.ref.repository, wasm)
        client.push_blob(session, t.ref.repository, config)
        digest = client.push_manifest(session, t.ref.repository, t.ref.identifier, manifest, client.OCI_MANIFEST)
    done = time.perf_counter()
    print(json.dumps({"inspect": inspected - started, "upload_put": done - inspected, "total": done - started,
                      "digest": digest, "client_hwm_kib": _status_kib(os.getpid(), "VmHWM"),
                      "tool_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
    return 0


# --- the driver ---------------------------------------------------------------------------------------------




def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")




def one_run(mode: str, wasm: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="driftless-bench-push-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        me = str(Path(__file__).resolve())
        registry = subprocess.Popen([sys.executable, me, "_registry", mode, str(Path(tmp) / "root"), str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
        try:
            wait_ready(f"{url}/v2/", registry)
            idle = _status_kib(registry.pid, "VmRSS")
            push = subprocess.run([sys.executable, me, "_push", mode, url, str(wasm)], capture_output=True,
                                  text=True, cwd=REPO_ROOT, timeout=300)
            if push.returncode != 0:
                raise SystemExit(f"push failed ({mode}):\n{push.stderr[-3000:]}")
            figures = json.loads(push.stdout.strip().splitlines()[-1])
            with urllib.request.urlopen(f"{url}/v2/_driftless/components/bench/large/1.0.0", timeout=30) as r:
                record = json.loads(r.read())
            peak = _status_kib(registry.pid, "VmHWM")
        finally:
            registry.terminate()
            registry.wait(10)
    return {"inspect": figures["inspect"], "upload_put": figures["upload_put"], "total": figures["total"],
            "registry_idle_mib": idle / 1024, "registry_peak_mib": peak / 1024,
            "client_peak_mib": figures["client_hwm_kib"] / 1024, "tool_peak_mib": figures["tool_kib"] / 1024,
            "worlds": record.get("worlds")}


def default_wasm() -> Path:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "hack" / "build-standard-components.py"), "--only",
                           "py-hello", "--print-paths"], capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"building py-hello failed:\n{done.stderr[-3000:]}")
    return Path(json.loads(done.stdout)["py-hello"])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_registry":
        return _registry_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "_push":
        return _push_child(sys.argv[2], sys.argv[3], sys.argv[4])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="pushes per inspector (default 3); medians reported")
    parser.add_argument("--wasm", type=Path, help="the component to push (default: the py-hello standard component)")
    parser.add_argument("--record", action="store_true", help="append the figures to hack/bench/RESULTS.md")
    args = parser.parse_args()
    wasm = args.wasm or default_wasm()
    size_mb = wasm.stat().st_size / 1e6
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for i in range(args.runs):  # alternate, so background load hits both alike
        for mode in MODES:
            run = one_run(mode, wasm)
            results[mode].append(run)
            print(f"run {i + 1} {mode:10s}: inspect {run['inspect']:.2f} s, upload+PUT {run['upload_put']:.2f} s, "
                  f"total {run['total']:.2f} s, registry peak {run['registry_peak_mib']:.0f} MiB "
                  f"(idle {run['registry_idle_mib']:.0f}), client peak {run['client_peak_mib']:.0f} MiB, "
                  f"wasm-tools peak {run['tool_peak_mib']:.0f} MiB, "
                  f"worlds {run['worlds']}", flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    rows = [
        ("client: inspect (build the artifact), s", "inspect", "{:.2f}"),
        ("upload + manifest PUT (registry inspects), s", "upload_put", "{:.2f}"),
        ("push total, s", "total", "{:.2f}"),
        ("registry peak RSS (VmHWM, its own process), MiB", "registry_peak_mib", "{:.0f}"),
        ("registry idle RSS before the push, MiB", "registry_idle_mib", "{:.0f}"),
        ("client peak RSS, MiB", "client_peak_mib", "{:.0f}"),
        ("wasm-tools subprocess peak RSS (client side), MiB", "tool_peak_mib", "{:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    table = [f"| {'measure'.ljust(width)} | {LABELS['wasmtime']:>25} | {LABELS['wasm-tools']:>18} |",
             f"|{'-' * (width + 2)}|{'-' * 27}|{'-' * 20}|"]
    def cell(mode: str, key: str, fmt: str) -> str:
        value = med(mode, key)
        return "—" if key == "tool_peak_mib" and not value else fmt.format(value)  # no subprocess before

    for label, k, fmt in rows:
        table.append(f"| {label.ljust(width)} | {cell('wasmtime', k, fmt):>25} | {cell('wasm-tools', k, fmt):>18} |")
    print("\n".join(table))
    if args.record:
        load = os.getloadavg()[0]
        text = (f"\n### {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC — push of a {size_mb:.1f} MB component\n\n"
                f"- machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
                f"{platform.python_version()}; load average {load:.1f} at the end (machine shared with other work)\n"
                f"- command: `python hack/bench/push_large.py --runs {args.runs} --record`; component: "
                f"`{wasm.name}` ({'py-hello, componentize-py 0.25.1' if args.wasm is None else 'given'}), "
                f"worlds {results['wasm-tools'][0]['worlds']}\n"
                "- before = the wasmtime inspector (Cranelift compile, opt level none) kept in the script, patched into "
                "the same client and registry processes; each push to a fresh registry; medians of "
                f"{args.runs}\n- a busy machine slows both columns, wasmtime's parallel compile most\n\n"
                + "\n".join(table) + "\n")
        results_md = HERE / "RESULTS.md"
        content = results_md.read_text()
        section = "## Registry: pushing a large component"
        if section not in content:
            content = content.rstrip("\n") + f"\n\n{section}\n"
        start = content.index(section) + len(section)
        nxt = content.find("\n## ", start)
        end = len(content) if nxt < 0 else nxt
        content = content[:end].rstrip("\n") + "\n" + text + content[end:]
        results_md.write_text(content)
        print(f"recorded in {results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
