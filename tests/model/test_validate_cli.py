"""`driftless validate` as users run it: a real process, exit codes, text and JSON output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.model.conftest import EXAMPLE_MANIFESTS, FIXTURES, REPO_ROOT


def validate(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftless", "validate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_example_manifests_are_valid_by_default_path() -> None:
    result = validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "manifests: valid: 3 environment(s), 7 application(s), 0 error(s), 0 warning(s)"


def test_errors_exit_1_with_one_located_line_each() -> None:
    result = validate(str(FIXTURES / "bad" / "yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    root = FIXTURES / "bad" / "yaml"
    assert f"{root}/dev/apps/broken.yaml:7:5: error: YAML syntax error: " in lines[0]
    assert lines[-1] == f"{root}: invalid: 1 environment(s), 1 application(s), 6 error(s), 1 warning(s)"
    assert any(line.endswith("(kind)") and "did you mean 'Application'?" in line for line in lines)


def test_warnings_alone_exit_0(tmp_path: Path) -> None:
    tree = tmp_path / "m"
    (tree / "dev" / "apps").mkdir(parents=True)
    (tree / "dev" / "environment.yaml").write_text((EXAMPLE_MANIFESTS / "dev" / "environment.yaml").read_text())
    (tree / "dev" / "apps" / "README.md").write_text("notes\n")
    result = validate(str(tree))
    assert result.returncode == 0
    assert "warning: dev/apps/README.md is not read" in result.stdout
    strict = validate(str(tree), "--strict")
    assert strict.returncode == 1 and "error: dev/apps/README.md is not read" in strict.stdout


def test_json_output_is_a_list_of_problems() -> None:
    result = validate(str(FIXTURES / "bad" / "promotion"), "-o", "json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    assert {p["code"] for p in problems} == {"promotion-cycle", "promotion-self", "promotion-unknown"}
    first = problems[0]
    assert set(first) == {"level", "file", "line", "column", "path", "message", "code"}
    assert first["file"].endswith("promotion/a/environment.yaml") and (first["line"], first["column"]) == (8, 11)
    assert first["path"] == "spec.promotion.from"
    ok = validate("-o", "json")
    assert (ok.returncode, json.loads(ok.stdout)) == (0, [])


def test_missing_path_and_bad_option() -> None:
    result = validate("/nonexistent/manifests")
    assert result.returncode == 1
    assert "/nonexistent/manifests does not exist" in result.stdout
    bad = validate("-o", "xml")
    assert bad.returncode == 2 and "invalid choice: 'xml'" in bad.stderr


def test_one_file_inside_a_tree_is_checked_with_its_tree(tmp_path: Path) -> None:
    ok = validate("manifests/prod/apps/greeter.yaml")
    assert ok.returncode == 0 and "valid: checked with its tree" in ok.stdout
    tree = tmp_path / "m"
    shutil.copytree(EXAMPLE_MANIFESTS, tree)
    hello = tree / "dev" / "apps" / "hello.yaml"
    hello.write_text(hello.read_text().replace("demo/hello:1.0.0", "ghcr.io/acme/hello:1.0.0"))
    result = validate(str(hello))
    # the registry rule lives in dev/environment.yaml: only a tree-aware check can find it
    assert result.returncode == 1
    assert f"{hello}:13:14: error: registry 'ghcr.io' is not allowed in environment 'dev'" in result.stdout


def test_one_file_outside_a_tree_is_checked_on_its_own(tmp_path: Path) -> None:
    loose = tmp_path / "shop.yaml"
    loose.write_text((FIXTURES / "bad" / "semantic" / "dev" / "apps" / "shop.yaml").read_text())
    result = validate(str(loose), "-o", "json")
    assert result.returncode == 1
    codes = sorted({p["code"] for p in json.loads(result.stdout)})
    assert codes == ["bad-image", "duplicate-name", "overlapping-requirements", "route-collision", "self-link",
                     "unknown-component", "unpinned-image", "zero-replicas", "zero-weights"]
    assert all(p["file"] == str(loose) for p in json.loads(result.stdout))
