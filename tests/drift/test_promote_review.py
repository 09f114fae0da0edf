"""The typed compatibility and capability gates of a promotion, on a real platform: a new digest that
removes an export or changes a signature is refused (``compatible``, with interface, function, old ->
new type); one that imports more than the running digest needs an approval (``no-new-capabilities``),
recorded in the commit as ``Approved-Capabilities:``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import wasmtime

from tests.support.platform import environment, local_platform
from tests.support.procs import wait_until

IMPORT = '(import "wasi:cli/environment@0.2.0" (instance $env (export "get-arguments" (func (result (list string))))))'


def math(*, wide: bool = False, sub: bool = True, imports: bool = False) -> bytes:
    """A library component exporting acme:demo/math@1.0.0 (add, and sub unless removed)."""
    wit, core = ("u64", "i64") if wide else ("u32", "i32")
    return wasmtime.wat2wasm(f"""(component
      {IMPORT if imports else ""}
      (core module $m
        (func (export "add") (param {core} {core}) (result {core}) local.get 0 local.get 1 {core}.add)
        (func (export "sub") (param i32 i32) (result i32) local.get 0 local.get 1 i32.sub))
      (core instance $i (instantiate $m))
      (func $add (param "a" {wit}) (param "b" {wit}) (result {wit}) (canon lift (core func $i "add")))
      (func $sub (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "sub")))
      (instance $math (export "add" (func $add)) {'(export "sub" (func $sub))' if sub else ""})
      (export "acme:demo/math@1.0.0" (instance $math)))""")


def calc(tag: str) -> str:
    return json.dumps({"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": "calc"},
                       "spec": {"components": [{"name": "math", "image": f"demo/math:{tag}"}]}}) + "\n"


def prod_environment() -> str:
    return environment("prod").rstrip(" ") + "          promotion:\n            from: staging\n"  # under spec (dedented)


def test_promotion_checks_exports_and_new_capabilities(tmp_path: Path) -> None:
    p = local_platform(tmp_path, hosts={"h1": {"cloud": "aws"}})
    p.up(tree={"staging/environment.yaml": environment("staging", prefix="/staging"),
               "staging/apps/calc.yaml": calc("1.0.0"),
               "prod/environment.yaml": prod_environment(), "prod/apps/calc.yaml": calc("1.0.0")},
         components={"demo/math:1.0.0": math(), "demo/math:2.0.0": math(wide=True, sub=False),
                     "demo/math:1.1.0": math(imports=True)})  # fmt: skip
    try:
        def healthy(env: str) -> bool:
            return p.reconciler.app(env, "calc")["health"] == "Healthy"

        def promote(**extra: object) -> tuple[int, dict[str, object]]:
            r = p.reconciler.post("/api/v1/promote", {"app": "calc", "from": "staging", "to": "prod", **extra})
            return r.status_code, r.json()

        def gate(body: dict[str, object], name: str) -> dict[str, object]:
            return next(g for g in body["gates"] if g["name"] == name)  # type: ignore[attr-defined,union-attr]

        wait_until(lambda: healthy("staging") and healthy("prod"), timeout=60, what="calc Healthy")
        prod_head = p.git.head()

        # a breaking digest in staging: add's types change, sub is gone
        p.git.push({"staging/apps/calc.yaml": calc("2.0.0")}, "staging: math 2.0.0")
        wait_until(lambda: (a := p.reconciler.app("staging", "calc"))["health"] == "Healthy"
                   and a["components"][0]["digest"] == p.registry.digest("demo/math:2.0.0"), timeout=60,
                   what="staging runs 2.0.0")  # fmt: skip
        status, body = promote(dryRun=True)
        assert status == 409, body
        compatible = gate(body, "compatible")
        assert not compatible["passed"]
        assert "math: acme:demo/math: add: func(a: u32, b: u32) -> u32 -> func(a: u64, b: u64) -> u64" in \
            str(compatible["message"])
        assert "function sub was removed" in str(compatible["message"])

        # a compatible digest that imports more: refused until the new capability is approved
        p.git.push({"staging/apps/calc.yaml": calc("1.1.0")}, "staging: math 1.1.0")
        wait_until(lambda: p.reconciler.app("staging", "calc")["components"][0]["digest"]
                   == p.registry.digest("demo/math:1.1.0") and healthy("staging"), timeout=60,
                   what="staging runs 1.1.0")  # fmt: skip
        status, body = promote()
        assert status == 409, body
        assert gate(body, "compatible")["passed"]
        needs = gate(body, "no-new-capabilities")
        assert not needs["passed"] and "math: wasi:cli/environment" in str(needs["message"])
        p.git.sync()
        assert p.git.head() == prod_head or "promote(" not in _log(p.git.work)  # nothing was committed

        status, body = promote(approveCapabilities=True)
        assert status == 200, body
        assert gate(body, "no-new-capabilities")["passed"]
        p.git.sync()
        message = _log(p.git.work)
        assert "promote(calc): staging -> prod" in message
        assert "Approved-Capabilities: math=wasi:cli/environment" in message
    finally:
        p.stop()


def _log(work: Path) -> str:
    return subprocess.run(["git", "-C", str(work), "log", "-1", "--format=%B"], check=True, capture_output=True,
                          text=True).stdout
