"""The JSON Schemas and the Python model never drift apart, and every good tree passes both."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import schemas
from model import Application, Environment, load_tree
from model.convert import DERIVED, FIELD_MAP, STRUCTURAL
from model.types import Daemon, Spread
from model.yamldoc import parse_documents
from tests.model.conftest import EXAMPLE_MANIFESTS, FIXTURES, GOOD_TREES

KINDS = ("Environment", "Application")


def _schema_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> set[str]:
    """Every property path of ``schema`` ("[]" for list items), following local $refs."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _schema_paths(root["$defs"][name], root, prefix)
    paths: set[str] = set()
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        paths.add(path)
        paths |= _schema_paths(sub, root, path)
    if isinstance(schema.get("items"), dict):
        paths |= _schema_paths(schema["items"], root, prefix + "[]")
    return paths


def _model_fields(cls: type, seen: set[type] | None = None) -> set[tuple[type, str]]:
    """(class, field) of ``cls`` and of every model dataclass reachable from its field types."""
    seen = seen if seen is not None else set()
    if cls in seen:
        return set()
    seen.add(cls)
    out: set[tuple[type, str]] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.add((cls, f.name))
        for inner in _leaf_types(hints[f.name]):
            if dataclasses.is_dataclass(inner):
                out |= _model_fields(inner, seen)
    return out


def _leaf_types(hint: Any) -> list[type]:
    args = typing.get_args(hint)
    if not args:
        return [hint] if isinstance(hint, type) else []
    return [leaf for arg in args for leaf in _leaf_types(arg)]


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind: str) -> None:
    schema = schemas.load(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", KINDS)
def test_every_schema_property_maps_to_the_model_and_back(kind: str) -> None:
    schema = schemas.load(kind)
    in_schema = _schema_paths(schema, schema)
    mapped = set(FIELD_MAP[kind]) | STRUCTURAL[kind]
    assert in_schema - mapped == set(), "schema properties without a model field: add them to FIELD_MAP"
    assert mapped - in_schema == set(), "FIELD_MAP names properties the schema does not have"


def test_every_model_field_comes_from_the_schema() -> None:
    mapped = {target for kind in KINDS for target in FIELD_MAP[kind].values()}
    model = _model_fields(Environment) | _model_fields(Application)
    assert model - mapped - DERIVED == set(), "model fields the schema cannot set"
    assert mapped - model == set(), "FIELD_MAP points at fields the model does not have"


def test_every_schema_object_refuses_unknown_fields() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{where} accepts unknown fields"
            for key, value in node.items():
                walk(value, f"{where}/{key}")
    for kind in KINDS:
        walk(schemas.load(kind), kind)


@pytest.mark.parametrize("root", [EXAMPLE_MANIFESTS, *GOOD_TREES], ids=lambda p: p.name)
def test_good_trees_pass_the_schemas_and_convert_to_the_model(root: Path) -> None:
    documents = 0
    for path in sorted(root.rglob("*.y*ml")):
        docs, problems = parse_documents(path.read_text(), file=str(path))
        assert problems == []
        for doc in docs:
            Draft202012Validator(schemas.load(doc.data["kind"])).validate(doc.data)
            documents += 1
    tree = load_tree(root)
    assert tree.problems == []
    loaded = len(tree.environments) + sum(len(apps) for apps in tree.applications.values())
    assert loaded == documents


def test_example_manifests_are_the_documented_demo() -> None:
    tree = load_tree(EXAMPLE_MANIFESTS)
    assert set(tree.environments) == {"dev", "staging", "prod"}
    assert {env: set(apps) for env, apps in tree.applications.items()} == {
        "dev": {"hello", "greeter", "hello-py"}, "staging": {"hello", "greeter"}, "prod": {"hello", "greeter"}
    }
    py = tree.applications["dev"]["hello-py"].components[0]  # the componentize-py example idles at zero
    assert py.scale is not None and py.scale.min_replicas == 0 and py.expose == "/py"
    prefixes = {name: env.ingress_path_prefix for name, env in tree.environments.items()}
    assert prefixes == {"dev": "/dev", "staging": "/staging", "prod": ""}
    prod = tree.environments["prod"]
    assert prod.promotion is not None and prod.promotion.from_env == "staging"
    assert prod.promotion.min_soak_seconds == 30 and prod.promotion.require_approval
    assert tree.environments["staging"].sync.mode == "report"
    assert tree.environments["dev"].promotion is None
    greeter = tree.applications["prod"]["greeter"]
    assert isinstance(greeter.component("frontend").placement, Daemon)  # type: ignore[union-attr]
    assert [(link.from_component, link.to_component, link.interface) for link in greeter.links] == [
        ("frontend", "greeter", "driftless:demo/greeter")
    ]
    hello = tree.applications["staging"]["hello"].components[0]
    assert isinstance(hello.placement, Spread)
    assert [(dict(r.labels), r.weight) for r in hello.placement.requirements] == [
        ({"cloud": "aws"}, 2), ({"cloud": "gcp"}, 1)
    ]
    assert hello.config == {"GREETING": "Hello from staging"}
    assert hello.image == "demo/hello:1.0.0" and hello.expose == "/hello"


def test_full_fixture_sets_every_field() -> None:
    tree = load_tree(FIXTURES / "good" / "full")
    edge = tree.environments["edge"]
    assert edge.host_selector.match_labels == {"tier": "edge"}
    assert edge.registries == ("registry.example.com", "127.0.0.1:5000")
    assert edge.sync.prune is False and edge.sync.mode == "report"
    assert edge.promotion is not None and edge.promotion.min_soak_seconds == 5400
    assert edge.source == "edge/environment.yml"
    shop = tree.applications["edge"]["shop"]
    assert shop.labels == {"team": "shop", "example.com/tier": "front"} and shop.env == "edge"
    web, cart = shop.components
    assert isinstance(web.placement, Daemon) and web.placement.per_host == 2
    assert (web.limits.memory_bytes, web.limits.fuel, web.limits.timeout_ms, web.limits.max_concurrency) == (
        64 * 1024 * 1024, 1_000_000, 1500, 4
    )
    assert web.capabilities == ("wasi:cli/environment", "wasi:clocks/wall-clock@0.2.0")
    assert isinstance(cart.placement, Spread) and [r.weight for r in cart.placement.requirements] == [3, 1, 0]
    assert tree.applications["edge"]["root-page"].components[0].placement == Spread(replicas=1)
    assert tree.applications["cloud"]["hello"].source == "cloud/apps/hello.yaml"
