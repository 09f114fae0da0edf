"""What a reconcile's plan step builds, counted (regression guards for its cost, no timing).

At 10,000 hosts / 100,000 instances the plan step took 1.4 s of CPU with a --signature-policy
(hack/bench/RESULTS.md, 2026-12-07): ``InstanceSpec(...)`` per component with 18 fields, and the
signature policy copying each of the 100,000 planned specs (``dataclasses.replace``) after every
plan, replans included, which also made every published document compare field by field. Here the
number of ``InstanceSpec.__init__`` calls, of spec value sets built, and the identity of the specs a
replan and the signature policy hand on are what is checked: each fails if that work comes back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import reconciler.planner.placement as placement
from model.types import (
    Application,
    Component,
    Environment,
    ManifestTree,
    Spread,
    SpreadRequirement,
    SyncPolicy,
)
from reconciler.controller.placing import place
from reconciler.controller.signing_policy import SigningPolicy
from reconciler.planner.placement import HostInfo, Plan
from shared import signing
from wire.control import FEATURE_SIGNATURES, InstanceSpec, SignatureRequirement, TrustedKeySpec

DIGEST = "sha256:" + "a" * 64
APPS, REPLICAS = 60, 5


def tree(*, apps: int = APPS, prune: bool = True) -> ManifestTree:
    clouds = ("aws", "gcp")
    return ManifestTree(revision="r", environments={"prod": Environment(name="prod", sync=SyncPolicy(prune=prune))},
                        applications={"prod": {f"app{a}": Application(name=f"app{a}", env="prod", components=(
                            Component(name="web", image="demo/hello:1.0.0", expose=f"/a{a}", config={"K": "v"},
                                      placement=Spread(replicas=REPLICAS, requirements=(
                                          SpreadRequirement(labels={"cloud": clouds[a % 2]}),))),)) for a in range(apps)}})


HOSTS = [HostInfo(name=f"h{i}", labels={"cloud": ("aws", "gcp")[i % 2]}, max_instances=1000) for i in range(12)]
REQUIREMENT = SignatureRequirement(require="all", keys=(TrustedKeySpec(name="ci", public_key="PEM"),))


def planned(previous: Plan | None = None, *, signatures: dict[str, SignatureRequirement] | None = None,
            manifests: ManifestTree | None = None) -> Plan:
    return place(tree=manifests or tree(), digests={"demo/hello:1.0.0": DIGEST}, hosts=HOSTS,
                 previous=previous.desired if previous else {}, registry="127.0.0.1:5000", signatures=signatures)


def specs_of(p: Plan) -> list[InstanceSpec]:
    return [s for _, s in p.instances()]


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_first_plan_builds_each_components_values_once_and_calls_no_spec_init(monkeypatch: pytest.MonkeyPatch) -> None:
    inits = counting(monkeypatch, InstanceSpec, "__init__")
    value_sets = counting(monkeypatch, placement, "component_fields")
    first = planned(signatures={"prod": REQUIREMENT})
    specs = specs_of(first)
    assert len(specs) == APPS * REPLICAS
    assert value_sets[0] == APPS, "one set of shared values per component, not per instance"
    assert inits[0] == 0, "instances are stamped, not built by InstanceSpec's 18-field __init__"
    # stamped specs are whole: equal to the one InstanceSpec(...) makes, signature included
    s = specs[0]
    assert s == InstanceSpec(**{f.name: getattr(s, f.name) for f in dataclasses.fields(InstanceSpec)})
    assert all(x.signature is REQUIREMENT for x in specs)


def test_a_replan_with_nothing_changed_builds_nothing_and_hands_on_the_same_specs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = planned(signatures={"prod": REQUIREMENT})
    value_sets = counting(monkeypatch, placement, "component_fields")
    stamped = counting(monkeypatch, placement, "stamp")
    stamped_by_host = counting(monkeypatch, placement, "stamps")
    again = planned(first, signatures={"prod": REQUIREMENT})
    assert value_sets[0] == 0 and stamped[0] == 0 and stamped_by_host[0] == 0
    for host, specs in again.desired.items():
        assert all(a is b for a, b in zip(specs, first.desired[host], strict=True))  # the publish step compares by identity


def test_a_changed_requirement_is_a_changed_spec() -> None:
    first = planned(signatures={"prod": REQUIREMENT})
    other = SignatureRequirement(require="any", keys=REQUIREMENT.keys)
    again = planned(first, signatures={"prod": other})
    assert all(s.signature is other for s in specs_of(again))
    unsigned = planned(again)
    assert all(s.signature is None for s in specs_of(unsigned))
    # sync.prune false: instances of a removed component stay, with the requirement of now
    kept = planned(again, signatures={"prod": REQUIREMENT}, manifests=tree(apps=APPS // 2, prune=False))
    assert len(specs_of(kept)) == APPS * REPLICAS
    assert all(s.signature == REQUIREMENT for s in specs_of(kept))


@pytest.fixture
def policy(tmp_path: Path) -> SigningPolicy:
    signing.write_key_pair(signing.generate("ed25519"), private_path=tmp_path / "ci.key")
    (tmp_path / "policy.yaml").write_text("environments:\n  prod: {keys: [ci.pub]}\n")
    return SigningPolicy(tmp_path / "policy.yaml", registry_url="http://127.0.0.1:5000", timeout=1.0)


def registrations(*, incapable: set[str]) -> dict[str, Any]:
    return {h.name: SimpleNamespace(registration=SimpleNamespace(
        features=frozenset() if h.name in incapable else frozenset({FEATURE_SIGNATURES}))) for h in HOSTS}


def test_the_signature_policy_keeps_the_planned_specs_and_refuses_hosts_that_cannot_verify(
        policy: SigningPolicy) -> None:
    first = planned(signatures=dict(policy.requirements))
    decorated = policy.decorate(first, hosts=registrations(incapable={"h0"}), carried=True)
    assert decorated.desired["h0"] == ()
    refused = len(first.desired["h0"])
    assert refused and sum(u.missing for u in decorated.unplaced) == refused
    assert all("cannot verify" in u.reason for u in decorated.unplaced)
    for host, specs in decorated.desired.items():
        if host != "h0":
            assert specs is first.desired[host], "no copy of a host's document that already carries the requirement"
    # a plan made without the requirements (an older caller) gets each spec copied with it
    bare = policy.decorate(planned(), hosts=registrations(incapable=set()))
    assert all(s.signature == policy.requirements["prod"] for s in specs_of(bare))
    assert specs_of(bare) and all(s.signature is not None for s in specs_of(bare))
