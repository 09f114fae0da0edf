"""Every bad fixture tree reports each of its problems at once, at the right file, line and column."""

from __future__ import annotations

import pytest

from model import Problem, load_tree
from tests.model.conftest import FIXTURES

Expected = tuple[str, int, int, str, str]  # file, line, column, level, code

EXPECTED: dict[str, list[Expected]] = {
    "schema": [
        ("dev/environment.yaml", 6, 3, "error", "unknown-field"),  # hostSelecter
        ("dev/environment.yaml", 9, 12, "error", "wrong-type"),  # prune: "yes"
        ("dev/environment.yaml", 10, 11, "error", "invalid-value"),  # mode: heal-all
        ("dev/environment.yaml", 11, 3, "error", "missing-field"),  # promotion without from
        ("dev/environment.yaml", 12, 14, "error", "invalid-value"),  # minSoak: 5 minutes
        ("dev/apps/web.yaml", 4, 9, "error", "invalid-value"),  # name Web_App
        ("dev/apps/web.yaml", 10, 15, "error", "wrong-type"),  # PORT: 8080
        ("dev/apps/web.yaml", 12, 9, "error", "missing-field"),  # spread without replicas
        ("dev/apps/web.yaml", 13, 11, "error", "unknown-field"),  # replica
        ("dev/apps/web.yaml", 15, 17, "error", "invalid-value"),  # memory: 16MB
        ("dev/apps/web.yaml", 16, 18, "error", "wrong-type"),  # timeout: 500
        ("dev/apps/web.yaml", 17, 7, "error", "missing-field"),  # component without image
        ("dev/apps/web.yaml", 19, 9, "error", "invalid-value"),  # spread and daemon
        ("dev/apps/web.yaml", 23, 18, "error", "invalid-value"),  # placement: {}
        ("dev/apps/web.yaml", 24, 22, "error", "invalid-value"),  # capability not an interface
        ("dev/apps/web.yaml", 25, 15, "error", "invalid-value"),  # expose without slash
        ("dev/apps/web.yaml", 27, 14, "error", "unpinned-image"),  # found although the schema refused the file
        ("dev/apps/web.yaml", 29, 7, "error", "missing-field"),  # link without interface
    ],
    "yaml": [
        ("dev/apps/broken.yaml", 7, 5, "error", "yaml-syntax"),
        ("dev/apps/dupkey.yaml", 5, 1, "error", "duplicate-key"),
        ("dev/apps/empty.yaml", 1, 1, "warning", "empty-file"),
        ("dev/apps/kinds.yaml", 2, 7, "error", "unknown-kind"),
        ("dev/apps/kinds.yaml", 5, 13, "error", "unknown-api-version"),
        ("dev/apps/kinds.yaml", 10, 1, "error", "wrong-type"),  # a document that is a plain string
        ("dev/apps/kinds.yaml", 12, 1, "error", "wrong-type"),  # a document that is a list
    ],
    "semantic": [
        ("dev/environment.yaml", 4, 9, "error", "name-mismatch"),
        ("dev/environment.yaml", 10, 7, "error", "misplaced-kind"),
        ("dev/apps/shop.yaml", 3, 18, "error", "duplicate-name"),  # app shop twice in dev
        ("dev/apps/shop.yaml", 7, 14, "error", "unpinned-image"),  # :latest
        ("dev/apps/shop.yaml", 9, 13, "error", "duplicate-name"),  # component web twice
        ("dev/apps/shop.yaml", 10, 14, "error", "unpinned-image"),  # no tag
        ("dev/apps/shop.yaml", 12, 14, "error", "disallowed-registry"),
        ("dev/apps/shop.yaml", 17, 13, "error", "zero-weights"),
        ("dev/apps/shop.yaml", 23, 21, "warning", "zero-replicas"),
        ("dev/apps/shop.yaml", 26, 24, "error", "overlapping-requirements"),  # cloud=aws / region=us-east-1
        ("dev/apps/shop.yaml", 27, 24, "error", "overlapping-requirements"),
        ("dev/apps/shop.yaml", 27, 24, "warning", "unreachable-labels"),  # tier=edge vs hostSelector tier=cloud
        ("dev/apps/shop.yaml", 28, 15, "error", "route-collision"),  # /shop twice in one environment
        ("dev/apps/shop.yaml", 30, 14, "error", "bad-image"),
        ("dev/apps/shop.yaml", 32, 23, "error", "unknown-component"),
        ("dev/apps/shop.yaml", 33, 7, "error", "self-link"),
        ("other/apps/web.yaml", 6, 52, "error", "route-collision"),  # /shop in an env sharing the hosts
    ],
    "promotion": [
        ("a/environment.yaml", 8, 11, "error", "promotion-cycle"),
        ("b/environment.yaml", 8, 11, "error", "promotion-cycle"),
        ("c/environment.yaml", 8, 11, "error", "promotion-self"),
        ("d/environment.yaml", 8, 11, "error", "promotion-unknown"),
    ],
    "layout": [
        ("dev/apps/nested", 0, 0, "warning", "not-read"),
        ("dev/apps/notes.txt", 1, 1, "warning", "not-read"),
        ("dev/extra.yaml", 1, 1, "warning", "not-read"),
        ("orphan", 0, 0, "error", "missing-environment"),
    ],
}


def _key(p: Problem) -> Expected:
    return (p.file, p.line, p.column, p.level, p.code)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_tree_reports_every_problem_with_its_place(name: str) -> None:
    tree = load_tree(FIXTURES / "bad" / name)
    assert sorted(_key(p) for p in tree.problems) == sorted(EXPECTED[name])
    assert not tree.ok
    for p in tree.problems:
        assert p.message and "Traceback" not in p.message
        # jsonschema's own wording never reaches users: each validator has a message of ours
        assert not any(raw in p.message for raw in ("is a required property", "does not match", "is not of type",
                                                    "Additional properties", "should be non-empty"))


def test_messages_say_how_to_fix() -> None:
    by_code = {p.code: p for name in EXPECTED for p in load_tree(FIXTURES / "bad" / name).problems}
    assert "did you mean 'hostSelector'?" in by_code["unknown-field"].message
    assert "did you mean 'Application'?" in by_code["unknown-kind"].message
    assert "pin a version tag or an @sha256 digest" in by_code["unpinned-image"].message
    port = next(p for p in load_tree(FIXTURES / "bad" / "schema").problems if p.path.endswith("config.PORT"))
    assert "must be a string, not the integer 8080" in port.message and "put it in quotes" in port.message
    assert "a <- b <- a" in by_code["promotion-cycle"].message
    assert "add orphan/environment.yaml" in by_code["missing-environment"].message
    assert "add it to spec.registries" in by_code["disallowed-registry"].message


def test_broken_files_do_not_hide_the_good_ones() -> None:
    tree = load_tree(FIXTURES / "bad" / "yaml")
    assert set(tree.applications["dev"]) == {"good"}
    assert tree.environments["dev"].name == "dev"
    # the orphan folder's apps are still read and checked
    layout = load_tree(FIXTURES / "bad" / "layout")
    assert set(layout.applications["orphan"]) == {"hello"}


def test_problem_paths_are_json_paths() -> None:
    tree = load_tree(FIXTURES / "bad" / "schema")
    paths = {p.path for p in tree.problems}
    assert "spec.components[0].placement.spread.replica" in paths
    assert "spec.hostSelecter" in paths
