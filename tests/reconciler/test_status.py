"""App status is a pure function of what was published and what the hosts report."""

from __future__ import annotations

from model.types import Application, Component, Environment, ManifestTree, Spread
from reconciler.planner.placement import HostInfo, Unplaced, plan
from reconciler.planner.status import app_views
from wire.control import HostDesiredState, HostReport, InstanceStatus

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def setup(replicas: int = 2) -> tuple[ManifestTree, dict[str, HostDesiredState]]:
    comp = Component(name="web", image="demo/hello:1.0.0", placement=Spread(replicas=replicas), config={"K": "v"})
    tree = ManifestTree(revision="r", environments={"prod": Environment(name="prod")},
                        applications={"prod": {"shop": Application(name="shop", env="prod", components=(comp,))}})
    p = plan(tree=tree, digests={"demo/hello:1.0.0": DIGEST}, hosts=[HostInfo(name="a"), HostInfo(name="b")],
             previous={}, registry="r:5000")
    docs = {h: HostDesiredState(host=h, generation=1, instances=specs) for h, specs in p.desired.items()}
    return tree, docs


def report(doc: HostDesiredState, *, status: str = "Running", digest: str | None = None,
           generation: int = 1, error: str | None = None) -> HostReport:
    return HostReport(name=doc.host, observed_generation=generation, instances=tuple(
        InstanceStatus(id=s.id, env=s.env, app=s.app, component=s.component, digest=digest or s.digest, status=status,
                       config=dict(s.config), last_error=error) for s in doc.instances))


def view(tree: ManifestTree, docs: dict[str, HostDesiredState], reports: dict[str, HostReport],
         unplaced: tuple[Unplaced, ...] = (), states: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return app_views(tree=tree, digests={"demo/hello:1.0.0": DIGEST}, published=docs, reports=reports,
                     host_states={"a": "Ready", "b": "Ready"} if states is None else states, unplaced=unplaced)[("prod", "shop")]


def test_all_running_is_synced_and_healthy() -> None:
    tree, docs = setup()
    v = view(tree, docs, {h: report(d) for h, d in docs.items()})
    assert (v.sync, v.health) == ("Synced", "Healthy")
    assert v.components[0].desired == 2 and v.components[0].ready == 2
    assert v.components[0].hosts == ("a", "b")


def test_missing_report_is_progressing_and_out_of_sync() -> None:
    tree, docs = setup()
    v = view(tree, docs, {"a": report(docs["a"])})
    assert (v.sync, v.health) == ("OutOfSync", "Progressing")
    assert v.components[0].ready == 1


def test_old_digest_still_running_is_out_of_sync() -> None:
    tree, docs = setup()
    v = view(tree, docs, {"a": report(docs["a"]), "b": report(docs["b"], digest=OTHER)})
    assert v.sync == "OutOfSync" and v.health == "Progressing"


def test_crash_loop_is_degraded_with_the_error() -> None:
    tree, docs = setup()
    v = view(tree, docs, {"a": report(docs["a"]), "b": report(docs["b"], status="BackOff", error="trap: oops")})
    assert v.health == "Degraded" and "trap: oops" in v.message
    assert v.components[0].errors and "trap: oops" in v.components[0].errors[0]


def test_generation_not_yet_observed_is_out_of_sync() -> None:
    tree, docs = setup()
    docs = {h: HostDesiredState(host=h, generation=2, instances=d.instances) for h, d in docs.items()}
    v = view(tree, docs, {h: report(d, generation=1) for h, d in docs.items()})
    assert v.sync == "OutOfSync"


def test_unplaced_replicas_degrade_unless_no_host_is_there_yet() -> None:
    tree, docs = setup()
    missing = (Unplaced(env="prod", app="shop", component="web", missing=1, reason="no Ready host matches"),)
    v = view(tree, docs, {h: report(d) for h, d in docs.items()}, missing)
    assert v.health == "Degraded" and "not placed" in v.message
    v = view(tree, {}, {}, missing, states={})
    assert v.health == "Progressing" and "waiting for hosts" in v.message


def test_removed_instance_still_running_is_out_of_sync() -> None:
    tree, docs = setup(replicas=1)
    running = {h: report(d) for h, d in docs.items()}
    spare = HostDesiredState(host="b", generation=1, instances=())
    extra = InstanceStatus(id="prod/shop/web/9", env="prod", app="shop", component="web", digest=DIGEST,
                           status="Running")
    running["b"] = HostReport(name="b", observed_generation=1, instances=(extra,))
    v = view(tree, {**docs, "b": spare}, running)
    assert v.sync == "OutOfSync" and "being removed" in v.message


def test_an_out_of_band_instance_is_drift_not_a_status_change() -> None:
    """The README's walkthrough: an instance started by hand (unmanaged) next to the app leaves it Synced
    and Healthy, so its soak (healthySince, read by the min-soak gate) goes on; the promotion's no-drift
    gate is what refuses while it runs (tests/drift/test_promote.py)."""
    tree, docs = setup()
    running = {h: report(d) for h, d in docs.items()}
    oob = InstanceStatus(id="prod/shop/web/oob-1", env="prod", app="shop", component="web", digest=DIGEST,
                         status="Running", managed=False)
    running["a"] = HostReport(name="a", observed_generation=1, instances=(*running["a"].instances, oob))
    v = view(tree, docs, running)
    assert (v.sync, v.health) == ("Synced", "Healthy")
