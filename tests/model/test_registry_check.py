"""Registry-backed checks against a real `driftless registry serve` holding the example components."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from model import check_registry, load_tree
from shared import registry_client as client
from tests.model.conftest import EXAMPLE_MANIFESTS, REPO_ROOT
from tests.registry import components
from tests.support.procs import DriftlessProcess, free_port
from tests.support.standard import standard_component

COMPONENTS = REPO_ROOT / "examples" / "components"


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("registry")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["registry", "serve", "--root", str(tmp / "data"), "--listen", f"127.0.0.1:{port}"]
    with DriftlessProcess(args, log_dir=tmp, ready_url=f"{url}/v2/"):
        for name in ("hello", "greeter", "frontend"):
            client.push_component(f"demo/{name}:1.0.0", (COMPONENTS / f"{name}.wasm").read_bytes(), registry_url=url)
        # the example manifests' componentize-py component (manifests/dev/apps/hello-py.yaml)
        client.push_component("demo/hello-py:1.0.0", standard_component("py-hello").read_bytes(), registry_url=url)
        yield url


APP = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: wiring}
spec:
  components:
    - {name: web, image: "demo/hello:1.0.0", expose: /web}
    - {name: front, image: "demo/frontend:1.0.0", expose: /front}
    - {name: greeter, image: "demo/greeter:1.0.0", expose: /greeter}
    - {name: ghost, image: "demo/ghost:1.0.0"}
    - {name: remote, image: "registry.example.com/demo/hello:1.0.0"}
  links:
    - {from: front, to: web, interface: "driftless:demo/greeter"}
    - {from: greeter, to: greeter-copy, interface: "driftless:demo/greeter"}
    - {from: web, to: greeter, interface: "driftless:demo/greeter"}
"""


def test_example_manifests_fit_the_real_components(registry_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "driftless", "validate", str(EXAMPLE_MANIFESTS),
                             "--registry", registry_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def _tree(tmp_path: Path, apps: dict[str, str]) -> Path:
    root = tmp_path / "m"
    (root / "dev" / "apps").mkdir(parents=True)
    env = (EXAMPLE_MANIFESTS / "dev" / "environment.yaml").read_text()
    (root / "dev" / "environment.yaml").write_text(env.replace("registries: []", "registries: [registry.example.com]"))
    for name, text in apps.items():
        (root / "dev" / "apps" / f"{name}.yaml").write_text(text)
    return root


def test_missing_images_and_miswired_links_are_located(registry_url: str, tmp_path: Path) -> None:
    tree = load_tree(_tree(tmp_path, {"wiring": APP}))
    # greeter-copy does not exist: the loader says so; the registry checks still run on the rest
    assert [p.code for p in tree.errors] == ["unknown-component"]
    problems = check_registry(tree, registry_url=registry_url)
    assert all(p.file == "dev/apps/wiring.yaml" for p in problems)
    assert sorted((p.line, p.code, p.level) for p in problems) == [
        (8, "not-http-handler", "error"),  # greeter exposes a route but exports no driftless:http/handler
        (9, "image-not-found", "error"),  # demo/ghost:1.0.0
        (10, "not-checked", "warning"),  # on another registry
        (12, "interface-not-exported", "error"),  # front -> web: hello exports only the HTTP handler
        (13, "interface-not-imported", "error"),  # greeter imports nothing
        (14, "interface-not-imported", "error"),  # web -> greeter: greeter exports it, web does not import it
    ]
    by_code = {p.code: p for p in problems}
    assert "(it exports driftless:http/handler@0.1.0)" in by_code["interface-not-exported"].message
    assert by_code["interface-not-exported"].path == "spec.links[0].interface"
    assert "push it" in by_code["image-not-found"].message


WASI_USER = """(component
  (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))
  (import "wasi:cli/stdout@0.2.0" (instance (export "get-stdout" (func (result u32))))))"""


def test_imports_need_links_and_a_capability_list_is_strict(registry_url: str, tmp_path: Path) -> None:
    import wasmtime

    client.push_component("demo/envy:1.0.0", wasmtime.wat2wasm(WASI_USER), registry_url=registry_url)
    app = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: imports}
spec:
  components:
    - {name: lonely, image: "demo/frontend:1.0.0"}
    - {name: envy, image: "demo/envy:1.0.0"}
    - {name: strict, image: "demo/envy:1.0.0", capabilities: [wasi:clocks/wall-clock]}
    - {name: granted, image: "demo/envy:1.0.0", capabilities: [wasi:cli/environment]}
    - {name: versioned, image: "demo/envy:1.0.0", capabilities: ["wasi:cli/environment@0.2.3"]}
"""
    tree = load_tree(_tree(tmp_path, {"imports": app}))
    assert tree.ok
    found = sorted((p.line, p.code) for p in check_registry(tree, registry_url=registry_url)
                   if p.code != "nothing-to-run")  # envy exports nothing: test_components_need_a_world
    # grants, not import lists: envy's WASI imports are linked; a capabilities list (strict) must name
    # them; wasi:cli/stdout needs none (always granted); versions are not compared, as on hosts
    assert found == [(6, "unlinked-import"), (8, "missing-capability")]


def test_http_links_need_a_caller_that_sends_http(registry_url: str, tmp_path: Path) -> None:
    hello = standard_component("http-hello-wat").read_bytes()
    client.push_component("demo/wat-api:1.0.0", hello, registry_url=registry_url)
    client.push_component("demo/py-front:1.0.0", standard_component("py-hello").read_bytes(),
                          registry_url=registry_url)
    app = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: shop}
spec:
  components:
    - {name: front, image: "demo/py-front:1.0.0", expose: /shop}
    - {name: api, image: "demo/wat-api:1.0.0"}
    - {name: mute, image: "demo/wat-api:1.0.0"}
  links:
    - {from: front, to: api, interface: "wasi:http/incoming-handler@0.2.0"}
    - {from: api, to: mute, interface: "wasi:http/incoming-handler@0.2.0"}
    - {from: front, to: api, interface: "driftless:demo/greeter"}
"""
    tree = load_tree(_tree(tmp_path, {"shop": app}))
    assert tree.ok
    problems = [p for p in check_registry(tree, registry_url=registry_url) if p.level == "error"]
    found = sorted((p.line, p.code) for p in problems)
    # front imports wasi:http/outgoing-handler: its HTTP link is fine; the WAT api sends no HTTP;
    # a typed link still needs the target to export the interface
    assert found == [(11, "interface-not-imported"), (12, "interface-not-exported"),
                     (12, "interface-not-imported")], problems
    assert "cannot send HTTP requests" in next(p.message for p in problems if p.line == 11)


def test_always_granted_wasi_is_written_once() -> None:
    import model.registry_check
    import shared.interfaces

    assert model.registry_check.ALWAYS_ALLOWED_WASI is shared.interfaces.ALWAYS_ALLOWED_WASI


def test_unreachable_registry_is_said_once(tmp_path: Path) -> None:
    tree = load_tree(EXAMPLE_MANIFESTS)
    url = f"http://127.0.0.1:{free_port()}"
    problems = check_registry(tree, registry_url=url)
    assert [(p.code, p.level, p.file, p.path) for p in problems] == [
        ("registry-unreachable", "error", "dev/apps/greeter.yaml", "spec.components[0].image")
    ]
    assert f"registry {url} is not reachable" in problems[0].message and problems[0].line == 10


def test_digest_references_are_checked_too(registry_url: str, tmp_path: Path) -> None:
    digest = client.resolve("demo/hello:1.0.0", registry_url=registry_url)
    assert digest is not None
    missing = "sha256:" + "0" * 64
    app = f"""apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {{name: pinned}}
spec:
  components:
    - {{name: good, image: "demo/hello@{digest}", expose: /good}}
    - {{name: gone, image: "demo/hello@{missing}", expose: /gone}}
"""
    tree = load_tree(_tree(tmp_path, {"pinned": app}))
    assert tree.ok
    assert [(p.line, p.code) for p in check_registry(tree, registry_url=registry_url)] == [(7, "image-not-found")]


WORLDS_APP = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: worlds}
spec:
  components:
    - {name: proxy, image: "std/http-hello:1.0.0", expose: /proxy}
    - {name: native, image: "demo/hello:1.0.0", expose: /native}
    - {name: job, image: "std/cli-job:1.0.0"}
    - {name: job-served, image: "std/cli-job:1.0.0", expose: /job}
    - {name: library, image: "demo/greeter:1.0.0"}
    - {name: bare, image: "std/answer:1.0.0"}
"""


def test_components_need_a_world(registry_url: str, tmp_path: Path) -> None:
    for name, wasm in [("http-hello", standard_component("http-hello-wat").read_bytes()),
                       ("cli-job", standard_component("cli-job-wat").read_bytes()),
                       ("answer", components.hello())]:
        client.push_component(f"std/{name}:1.0.0", wasm, registry_url=registry_url)
    tree = load_tree(_tree(tmp_path, {"worlds": WORLDS_APP}))
    assert tree.ok
    problems = check_registry(tree, registry_url=registry_url)
    # a wasi:http/proxy component may expose a route, and its WASI imports need no in-process capabilities
    assert sorted((p.file, p.line, p.code, p.path) for p in problems) == [
        ("dev/apps/worlds.yaml", 9, "not-http-handler", "spec.components[3].expose"),
        ("dev/apps/worlds.yaml", 11, "nothing-to-run", "spec.components[5].image"),
    ]
    by_code = {p.code: p for p in problems}
    assert "targets no HTTP world" in by_code["not-http-handler"].message
    assert "(it exports wasi:cli/run@0.2.6)" in by_code["not-http-handler"].message
    assert "(it exports answer)" in by_code["nothing-to-run"].message
    assert "wasi:http/proxy, wasi:cli/command or driftless:http" in by_code["nothing-to-run"].message


def test_worlds_are_inferred_from_an_older_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from model import registry_check

    reg = registry_check._Registry("http://127.0.0.1:1", credentials=None)
    body = b'{"kind": "component", "imports": [], "exports": ["wasi:http/incoming-handler@0.2.3"]}'
    monkeypatch.setattr(reg.session, "request", lambda *a, **k: (200, {}, body))
    info = reg.info("std/old", "1.0.0")
    assert isinstance(info, registry_check.ComponentInfo) and info.worlds == ("wasi:http/proxy",)


def test_diff_flags_a_new_digest_that_needs_more_than_the_running_one(registry_url: str) -> None:
    from driftless.commands.diff import new_needs

    old = client.push_component("demo/grows:1.0.0", standard_component("http-hello-wat").read_bytes(),
                                registry_url=registry_url)
    new = client.push_component("demo/grows:2.0.0", standard_component("py-hello").read_bytes(),
                                registry_url=registry_url)
    host = registry_url.split("://", 1)[1]
    change = {"action": "update", "env": "prod", "app": "shop", "component": "web", "oldDigest": old,
              "newDigest": new, "image": f"{host}/demo/grows@{new}"}
    (need,) = new_needs([change, dict(change)], registry_url=registry_url)  # one line per component
    assert need["component"] == "prod/shop/web"
    assert "wasi:http/outgoing-handler" in need["imports"]  # py-hello can call out; the WAT one could not
    assert "wasi:sockets/tcp" in need["imports"]
    assert "wasi:http/types" not in need["imports"]  # both import it
    back = dict(change, oldDigest=new, newDigest=old, image=f"{host}/demo/grows@{old}")
    (review,) = new_needs([back], registry_url=registry_url)
    assert review["imports"] == []  # needing less is not flagged...
    assert review["breaking"] == ["exports: the interface is no longer exported"]  # ...losing an export is


def _math(add: tuple[str, str], *, sub: bool) -> bytes:
    """A component exporting acme:demo/math@1.0.0 with add (of the given component/core type) and maybe sub."""
    import wasmtime

    wit, core = add
    subtract = ('(func (export "sub") (param i32 i32) (result i32) local.get 0 local.get 1 i32.sub)' if sub else "")
    lifted = '(func $sub (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "sub")))' if sub else ""
    export = '(export "sub" (func $sub))' if sub else ""
    return wasmtime.wat2wasm(f"""(component
      (core module $m
        (func (export "add") (param {core} {core}) (result {core}) local.get 0 local.get 1 {core}.add) {subtract})
      (core instance $i (instantiate $m))
      (func $add (param "a" {wit}) (param "b" {wit}) (result {wit}) (canon lift (core func $i "add")))
      {lifted}
      (instance $math (export "add" (func $add)) {export})
      (export "acme:demo/math@1.0.0" (instance $math)))""")


def test_diff_flags_a_new_digest_that_breaks_its_exports(registry_url: str) -> None:
    from driftless.commands.diff import new_needs

    old = client.push_component("demo/math:1.0.0", _math(("u32", "i32"), sub=True), registry_url=registry_url)
    added = client.push_component("demo/math:1.1.0", _math(("u32", "i32"), sub=True) + b"\x00\x02\x01x",
                                  registry_url=registry_url)  # the same exports (a custom section): compatible
    broken = client.push_component("demo/math:2.0.0", _math(("u64", "i64"), sub=False), registry_url=registry_url)
    host = registry_url.split("://", 1)[1]

    def change(new: str) -> dict[str, str]:
        return {"action": "update", "env": "prod", "app": "calc", "component": "math", "oldDigest": old,
                "newDigest": new, "image": f"{host}/demo/math@{new}"}

    assert new_needs([change(added)], registry_url=registry_url) == []
    (review,) = new_needs([change(broken)], registry_url=registry_url)
    assert review["breaking"] == [
        "acme:demo/math: add: func(a: u32, b: u32) -> u32 -> func(a: u64, b: u64) -> u64",
        "acme:demo/math: function sub was removed",
    ]
    assert review["imports"] == []


def test_compatibility_rules() -> None:
    from reconciler.planner.compat import breaking_changes, new_capabilities

    old = {"acme:x/api@1.0.0": ["get: func(k: string) -> string"], "acme:x/admin@1.0.0": ["reset: func()"]}
    grown = {"acme:x/api@1.1.0": ["get: func(k: string) -> string", "put: func(k: string, v: string)"],
             "acme:x/admin@1.0.0": ["reset: func()"], "acme:x/extra": ["ping: func()"]}
    assert breaking_changes(old, grown) == []  # additions are compatible
    assert breaking_changes(old, {"acme:x/api@1.0.0": ["get: func(k: string) -> string"]}) == [
        "acme:x/admin: the interface is no longer exported"]
    assert new_capabilities(["wasi:cli/environment@0.2.0"], ["wasi:cli/environment@0.2.6", "wasi:http/types@0.2.6"]) \
        == ["wasi:http/types"]
