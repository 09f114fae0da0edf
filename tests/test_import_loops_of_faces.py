"""No two modules of the HTTP faces import each other: reconciler/api (routes and the dashboard share
reconciler/api/context.py) and the registry (server, handler, transfer, options after the split). A
loop there fails here, with the path of imports that closes it. (The controller's loops are another
piece of work.)"""

from __future__ import annotations

from tests.test_architecture import _imports, _modules

PACKAGES = ("reconciler.api", "registry")


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if not name.startswith(PACKAGES):
            continue
        graph[name] = {imported for _, imported in _imports(path)
                       if imported in modules and imported != name and imported.startswith(PACKAGES)}
    return graph


def _loop(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as its path of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_http_faces_have_no_import_loop() -> None:
    loop = _loop(_graph())
    assert loop is None, "modules that import each other: " + " -> ".join(loop or [])


def test_the_check_sees_a_loop() -> None:
    assert _loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _loop({"a": {"b"}, "b": set()}) is None
