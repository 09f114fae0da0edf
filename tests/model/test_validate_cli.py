"""`driftless validate` as users run it: a real process, exit codes, text and JSON output."""

from __future__ import annotations

import json
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
    assert result.stdout.strip() == "manifests: valid: 3 environment(s), 6 application(s), 0 error(s), 0 warning(s)"


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
