"""Hostile or accidental input: binary, huge, symlinks out of the tree, odd YAML. Located messages, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import load_tree

ENV = """apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {name: dev}
spec: {}
"""
APP = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: NAME}
spec:
  components:
    - {name: web, image: "demo/hello:1.0.0"}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "manifests"
    (root / "dev" / "apps").mkdir(parents=True)
    (root / "dev" / "environment.yaml").write_text(ENV)
    (root / "dev" / "apps" / "ok.yaml").write_text(APP.replace("NAME", "ok"))
    return root


def _codes(root: Path, **kwargs: int) -> dict[str, tuple[str, int, int, str]]:
    return {p.code: (p.file, p.line, p.column, p.level) for p in load_tree(root, **kwargs).problems}


def test_binary_file_is_refused(tree: Path) -> None:
    (tree / "dev" / "apps" / "logo.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (tree / "dev" / "apps" / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    problems = [p for p in load_tree(tree).problems if p.code == "binary-file"]
    assert sorted(p.file for p in problems) == ["dev/apps/latin1.yaml", "dev/apps/logo.yaml"]
    assert all(p.level == "error" for p in problems)


def test_file_over_the_size_limit_is_refused_unread(tree: Path) -> None:
    (tree / "dev" / "apps" / "huge.yaml").write_text(APP.replace("NAME", "huge") + "# padding\n" * 200)
    assert "too-large" not in _codes(tree)
    found = _codes(tree, max_file_bytes=1000)
    assert found["too-large"] == ("dev/apps/huge.yaml", 1, 1, "error")
    assert set(load_tree(tree, max_file_bytes=1000).applications["dev"]) == {"ok"}


def test_symlinks_pointing_outside_the_tree_are_refused(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text(APP.replace("NAME", "secret"))
    (tree / "dev" / "apps" / "secret.yaml").symlink_to(secret)
    outside_dir = tmp_path / "elsewhere"
    (outside_dir / "apps").mkdir(parents=True)
    (outside_dir / "environment.yaml").write_text(ENV.replace("dev", "evil"))
    (tree / "evil").symlink_to(outside_dir)
    problems = [p for p in load_tree(tree).problems if p.code == "symlink-outside"]
    assert sorted(p.file for p in problems) == ["dev/apps/secret.yaml", "evil"]
    assert all("refused" in p.message and p.level == "error" for p in problems)
    tree_ = load_tree(tree)
    assert "secret" not in tree_.applications["dev"] and "evil" not in tree_.environments


def test_symlinks_inside_the_tree_are_followed_and_broken_ones_reported(tree: Path) -> None:
    (tree / "shared").mkdir()
    (tree / "shared" / "app.yaml").write_text(APP.replace("NAME", "shared"))
    (tree / "dev" / "apps" / "shared.yaml").symlink_to(Path("..") / ".." / "shared" / "app.yaml")
    (tree / "dev" / "apps" / "gone.yaml").symlink_to(tree / "nowhere.yaml")
    (tree / "dev" / "apps" / "ping.yaml").symlink_to("pong.yaml")
    (tree / "dev" / "apps" / "pong.yaml").symlink_to("ping.yaml")
    (tree / "loop").symlink_to(".")
    loaded = load_tree(tree)
    assert set(loaded.applications["dev"]) == {"ok", "shared"}
    assert [(p.code, p.file) for p in loaded.problems] == [
        ("broken-symlink", "dev/apps/gone.yaml"),
        ("broken-symlink", "dev/apps/ping.yaml"),
        ("broken-symlink", "dev/apps/pong.yaml"),
    ]


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("", "empty-file", 1),
        ("   \n\n# only a comment\n", "empty-file", 1),
        ("kind: Application\n\tmetadata: {}\n", "yaml-syntax", 2),
        ("a: 1\nb: 'unterminated\n", "yaml-syntax", 3),
        ("apiVersion: x\nkind: \x07\n", "yaml-syntax", 2),
        ("x: 1\na: &a [*a, *a]\n", "yaml-syntax", 1),  # a list that contains itself
        ("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i-1}'] * 10)}]\n" for i in range(1, 7)), "too-large", 1),
        ("[" * 5000 + "]" * 5000, "yaml-syntax", 1),
        ("kind: !custom Application\nmetadata: !tagged [x]\nspec: !!set {a}\n", "missing-field", 1),
    ],
    ids=["empty", "comments-only", "tab", "unterminated", "control-char", "alias-loop", "alias-bomb", "deep",
         "tags"],
)
def test_odd_yaml_gets_one_located_problem(tree: Path, text: str, code: str, line: int) -> None:
    (tree / "dev" / "apps" / "odd.yaml").write_text(text)
    odd = [p for p in load_tree(tree).problems if p.file == "dev/apps/odd.yaml"]
    assert odd and odd[0].code == code and odd[0].line == line, odd


def test_byte_order_mark_and_yml_suffix_are_fine(tree: Path) -> None:
    (tree / "dev" / "apps" / "bom.yml").write_bytes(b"\xef\xbb\xbf" + APP.replace("NAME", "bom").encode())
    loaded = load_tree(tree)
    assert loaded.problems == [] and set(loaded.applications["dev"]) == {"ok", "bom"}


def test_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    missing = load_tree(tmp_path / "nope")
    assert [(p.code, p.level) for p in missing.problems] == [("not-found", "error")]
    (tmp_path / "file.yaml").write_text(ENV)
    assert "is a file" in load_tree(tmp_path / "file.yaml").problems[0].message
    (tmp_path / "empty").mkdir()
    assert [p.code for p in load_tree(tmp_path / "empty").problems] == ["empty-tree"]
    (tmp_path / "repo" / "manifests" / "dev").mkdir(parents=True)
    (tmp_path / "repo" / "manifests" / "dev" / "environment.yaml").write_text(ENV)
    assert "did you mean the manifests/ folder" in load_tree(tmp_path / "repo").problems[0].message
    assert "one environment's folder" in load_tree(tmp_path / "repo" / "manifests" / "dev").problems[0].message


def test_limits_a_wasm_instance_could_never_honour(tree: Path) -> None:
    (tree / "dev" / "apps" / "limits.yaml").write_text("""apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: limits}
spec:
  components:
    - {name: a, image: "demo/a:1.0.0", limits: {memory: 5Gi, timeout: 0.1ms}}
    - {name: b, image: "demo/b:1.0.0", limits: {memory: "1000"}}
    - {name: c, image: "demo/c:1.0.0", limits: {memory: 4Gi, timeout: 0.6ms, fuel: 9223372036854775807}}
""")
    found = [(p.line, p.path, p.message.split(":")[0]) for p in load_tree(tree).problems]
    assert found == [
        (6, "spec.components[0].limits.memory", "memory is above 4Gi, the most a 32-bit Wasm memory can address"),
        (6, "spec.components[0].limits.timeout", "timeout is under 1ms"),
        (7, "spec.components[1].limits.memory", "memory is below one Wasm page (64Ki)"),
    ]


def test_anchors_and_merge_keys_share_settings(tree: Path) -> None:
    (tree / "dev" / "apps" / "merge.yaml").write_text("""apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: merge}
spec:
  components:
    - &base
      name: a
      image: "demo/a:1.0.0"
      limits: &limits {memory: 16Mi, timeout: 1s}
    - <<: *base
      name: b
      limits:
        <<: *limits
        timeout: 2s
        memry: 1Mi
""")
    problems = [p for p in load_tree(tree).problems if p.file == "dev/apps/merge.yaml"]
    assert [(p.line, p.column, p.code, p.path) for p in problems] == [
        (15, 9, "unknown-field", "spec.components[1].limits.memry")
    ]
    (tree / "dev" / "apps" / "merge.yaml").write_text(
        (tree / "dev" / "apps" / "merge.yaml").read_text().replace("        memry: 1Mi\n", ""))
    app = load_tree(tree).applications["dev"]["merge"]
    a, b = app.components
    assert (a.limits.memory_bytes, a.limits.timeout_ms) == (16 * 1024 * 1024, 1000)
    assert (b.name, b.image, b.limits.memory_bytes, b.limits.timeout_ms) == ("b", "demo/a:1.0.0", 16 * 1024 * 1024, 2000)


def test_duplicate_and_complex_keys(tree: Path) -> None:
    (tree / "dev" / "apps" / "keys.yaml").write_text(
        "apiVersion: driftless.dev/v1alpha1\nkind: Application\nmetadata: {name: keys}\n"
        "spec:\n  components:\n    - name: a\n      image: demo/a:1.0.0\n      name: b\n")
    (tree / "dev" / "apps" / "complex.yaml").write_text(
        "apiVersion: driftless.dev/v1alpha1\nkind: Application\nmetadata: {name: complex}\n"
        "spec:\n  components: [{name: a, image: 'demo/a:1.0.0'}]\n  ? [a, b]\n  : 1\n")
    found = {p.file: p for p in load_tree(tree).problems}
    dup = found["dev/apps/keys.yaml"]
    assert (dup.code, dup.line, dup.column) == ("duplicate-key", 8, 7)
    assert "duplicate key 'name' (first at line 6)" in dup.message
    complex_key = found["dev/apps/complex.yaml"]
    assert (complex_key.code, complex_key.line) == ("unknown-field", 6)


def test_an_outbound_host_with_an_impossible_port_is_refused_at_its_line(tree: Path) -> None:
    granted = APP.replace("NAME", "api").replace(
        '    - {name: web, image: "demo/hello:1.0.0"}',
        '    - name: web\n      image: "demo/hello:1.0.0"\n      grants:\n        outboundHosts:\n'
        '          - api.example.com:8443\n          - api.example.com:99999\n')
    (tree / "dev" / "apps" / "api.yaml").write_text(granted)
    problems = [p for p in load_tree(tree).problems if p.file == "dev/apps/api.yaml"]
    assert len(problems) == 1, problems
    assert problems[0].line == 11 and problems[0].level == "error"
    assert "api.example.com:99999" in problems[0].message and "1-65535" in str(problems[0])
