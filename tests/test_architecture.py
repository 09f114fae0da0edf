"""The layer contracts of docs/architecture.md, checked on the source: imports only point down.

Each package may import only the packages listed for it (its own modules always). An import
inside a function counts the same as one at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("shared", "wire", "model", "schemas", "registry", "host", "reconciler", "driftless")

# package (or subpackage) -> the packages of ours it may import, besides itself
ALLOWED: dict[str, set[str]] = {
    "shared": set(),
    "schemas": set(),
    "wire": {"shared"},
    "model": {"shared", "schemas"},
    "registry": {"shared"},
    "host": {"shared", "wire"},
    "reconciler.planner": {"shared", "wire", "model"},
    "reconciler.settings": {"shared"},
    "reconciler.controller": {"shared", "wire", "model", "reconciler.planner", "reconciler.settings"},
    "reconciler.gitops": {"shared", "wire", "model", "reconciler.planner", "reconciler.controller",
                          "reconciler.settings"},
    "reconciler.api": {"shared", "wire", "model", "reconciler.planner", "reconciler.controller",
                       "reconciler.gitops", "reconciler.settings"},
    "reconciler.server": {"shared", "wire", "model", "reconciler"},
    "reconciler": set(),  # the package itself (its __init__)
    "driftless": set(OURS),
}

# the planner computes; it never touches the network, the disk, processes or the clock's sleep
NO_IO = {"asyncio", "aiohttp", "httpx", "urllib", "socket", "subprocess", "sqlite3", "git", "os", "shutil",
         "tempfile", "pathlib", "io", "threading", "gc"}


def _modules() -> Iterator[tuple[str, Path]]:
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "bundled" in path.parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def _imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                yield node.lineno, ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.lineno, node.module
                for alias in node.names:  # "from reconciler import api" imports reconciler.api
                    yield node.lineno, f"{node.module}.{alias.name}"


def _layer(module: str) -> str:
    for key in sorted(ALLOWED, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key
    raise AssertionError(f"module {module} belongs to no layer: add it to ALLOWED and docs/architecture.md")


def _within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def test_every_import_points_down() -> None:
    violations = []
    for module, path in _modules():
        layer = _layer(module)
        allowed = ALLOWED[layer] | {layer}
        for line, imported in _imports(path):
            if imported.split(".")[0] not in OURS:
                continue
            if imported in OURS and imported.split(".")[0] != imported:
                continue
            if "." not in imported and imported in {layer.split(".")[0]}:
                continue  # "from reconciler import x" is judged by the x form yielded beside it
            if not _within(imported, allowed):
                violations.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {imported}")
    assert not violations, "imports that point up or sideways (see docs/architecture.md):\n" + "\n".join(violations)


def test_the_planner_does_no_io() -> None:
    violations = []
    for module, path in _modules():
        if not module.startswith("reconciler.planner"):
            continue
        for line, imported in _imports(path):
            if imported.split(".")[0] in NO_IO:
                violations.append(f"{path.relative_to(ROOT)}:{line}: the planner imports {imported}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"open", "print"}:
                violations.append(f"{path.relative_to(ROOT)}:{node.lineno}: the planner calls {node.func.id}()")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("source", ["import reconciler.api.routes\n", "from reconciler.api import routes\n"])
def test_the_check_sees_an_upward_import(source: str) -> None:
    """The checker itself can fail: an upward import in a planner module is found."""
    module = ROOT / "reconciler" / "planner" / "placement.py"
    imported = [name for _, name in _imports(module, source) if name.split(".")[0] in OURS]
    allowed = ALLOWED["reconciler.planner"] | {"reconciler.planner"}
    assert any(not _within(name, allowed) for name in imported)


# ---------------------------------------------------------------- import loops
# Two modules importing each other (directly or around a ring, lazily or under TYPE_CHECKING) are one
# job split badly: break the ring with a protocol or a module of its own. None is allowed.
KNOWN_LOOPS: set[frozenset[str]] = set()


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (``from pkg import mod`` counts as mod, not pkg)."""
    modules = dict(_modules())

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, node.module] if node.module else parts)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                found = known(target) if target.split(".")[0] in OURS else None
                if found is not None and found != module:
                    graph[module].add(found)
    return graph


def _loops(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def test_no_import_loops() -> None:
    loops = [loop for loop in _loops(_import_graph()) if loop not in KNOWN_LOOPS]
    assert not loops, "modules that import each other (break the ring with a typing.Protocol or a module of its " \
                      "own):\n" + "\n".join(" <-> ".join(sorted(loop)) for loop in loops)


def test_the_loop_check_sees_a_ring() -> None:
    """The checker itself can fail: a ring of three is found, a chain is not."""
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _loops(ring) == [frozenset({"a", "b", "c"})]
    assert _loops({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert any("reconciler.controller.pipeline" in deps for deps in _import_graph().values())


# ---------------------------------------------------------------- module size
MAX_MODULE_LINES = 600  # a module longer than this does several jobs: split it by job


def test_no_module_is_over_600_lines() -> None:
    long = {name: n for name, path in _modules() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split each by job): {long}"
