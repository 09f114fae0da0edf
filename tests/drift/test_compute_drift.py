"""compute_drift: every category from constructed desired states and host reports (pure, no I/O)."""

from __future__ import annotations

from reconciler.planner.drift import (
    DeployedImage,
    DriftCategory,
    DriftItem,
    HostObservation,
    Rejection,
    TagObservation,
    compute_drift,
    tag_observations,
)
from wire.control import (
    FAILED,
    RUNNING,
    STARTING,
    STOPPING,
    HostDesiredState,
    HostReport,
    InstanceSpec,
    InstanceStatus,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
NOW = 1_000_000.0


def spec(
    ordinal: int = 0, *, digest: str = D1, config: dict[str, str] | None = None, env: str = "prod"
) -> InstanceSpec:
    return InstanceSpec(
        id=f"{env}/hello/web/{ordinal}",
        env=env,
        app="hello",
        component="web",
        image=f"127.0.0.1:5000/demo/hello@{digest}",
        digest=digest,
        config=config or {"GREETING": "hi"},
    )


def status(
    ordinal: int = 0,
    *,
    digest: str = D1,
    config: dict[str, str] | None = None,
    state: str = RUNNING,
    managed: bool = True,
    env: str = "prod",
    last_error: str | None = None,
    instance_id: str | None = None,
) -> InstanceStatus:
    return InstanceStatus(
        id=instance_id or f"{env}/hello/web/{ordinal}",
        env=env,
        app="hello",
        component="web",
        digest=digest,
        status=state,
        config=config or {"GREETING": "hi"},
        managed=managed,
        last_error=last_error,
    )


def observe(
    *specs: InstanceSpec,
    reported: tuple[InstanceStatus, ...] = (),
    generation: int = 5,
    observed: int = 5,
    published_at: float = NOW - 100,
    state: str = "Ready",
    host: str = "h1",
    last_seen: float = NOW - 1,
) -> tuple[dict[str, HostDesiredState], dict[str, HostObservation]]:
    desired = {host: HostDesiredState(host=host, generation=generation, revision="abc", instances=specs)}
    hosts = {
        host: HostObservation(
            name=host,
            state=state,
            last_seen=last_seen,
            published_generation=generation,
            published_at=published_at,
            report=HostReport(name=host, observed_generation=observed, instances=reported),
        )
    }
    return desired, hosts


def drift(desired, hosts, **kw) -> list[DriftItem]:  # type: ignore[no-untyped-def]
    return compute_drift(desired=desired, hosts=hosts, now=NOW, **kw)


def categories(items: list[DriftItem]) -> list[str]:
    return [str(i.category) for i in items]


def test_in_sync_is_empty() -> None:
    d, h = observe(spec(0), spec(1), reported=(status(0), status(1)))
    assert drift(d, h) == []


def test_missing_when_declared_and_not_reported() -> None:
    d, h = observe(spec(0), spec(1), reported=(status(0),))
    [item] = drift(d, h)
    assert item.category is DriftCategory.MISSING
    assert (item.env, item.app, item.component, item.host, item.instance) == (
        "prod",
        "hello",
        "web",
        "h1",
        "prod/hello/web/1",
    )
    assert item.expected == D1 and item.actual == "absent"
    assert item.since == NOW and item.counted
    assert "prod/hello/web/1" in item.message and "h1" in item.message


def test_missing_when_failed_carries_the_error() -> None:
    d, h = observe(spec(0), reported=(status(0, state=FAILED, last_error="missing import wasi:http"),))
    [item] = drift(d, h)
    assert item.category is DriftCategory.MISSING
    assert item.actual == FAILED
    assert "missing import wasi:http" in item.message


def test_unexpected_when_not_declared() -> None:
    d, h = observe(spec(0), reported=(status(0), status(7)))
    [item] = drift(d, h)
    assert item.category is DriftCategory.UNEXPECTED
    assert item.instance == "prod/hello/web/7" and item.expected == "absent"
    assert "not declared" in item.message


def test_unexpected_when_unmanaged_even_with_a_declared_id() -> None:
    manual = status(0, managed=False, instance_id="manual/1")
    d, h = observe(spec(0), reported=(status(0), manual))
    [item] = drift(d, h)
    assert item.category is DriftCategory.UNEXPECTED
    assert item.instance == "manual/1"
    assert "out of band" in item.message


def test_unmanaged_instance_is_unexpected_even_while_converging() -> None:
    manual = status(0, managed=False, instance_id="manual/1")
    d, h = observe(spec(0), reported=(manual,), generation=6, observed=5, published_at=NOW - 1)
    cats = sorted(categories(drift(d, h)))
    assert cats == ["Pending", "Unexpected"]


def test_version_mismatch() -> None:
    d, h = observe(spec(0, digest=D1), reported=(status(0, digest=D2),))
    [item] = drift(d, h)
    assert item.category is DriftCategory.VERSION_MISMATCH
    assert (item.expected, item.actual) == (D1, D2)


def test_config_mismatch_names_the_changed_keys() -> None:
    d, h = observe(
        spec(0, config={"A": "1", "B": "2"}), reported=(status(0, config={"A": "1", "B": "3", "C": "x"}),)
    )
    [item] = drift(d, h)
    assert item.category is DriftCategory.CONFIG_MISMATCH
    assert item.expected == '{"A":"1","B":"2"}'
    assert item.actual == '{"A":"1","B":"3","C":"x"}'
    assert "B, C" in item.message


def test_version_and_config_mismatch_together() -> None:
    d, h = observe(spec(0, digest=D1, config={"A": "1"}), reported=(status(0, digest=D2, config={"A": "2"}),))
    assert sorted(categories(drift(d, h))) == ["ConfigMismatch", "VersionMismatch"]


def test_pending_within_grace_instead_of_missing_or_mismatch() -> None:
    d, h = observe(
        spec(0, digest=D2),
        spec(1),
        reported=(status(0, digest=D1), status(9)),
        generation=6,
        observed=5,
        published_at=NOW - 3,
    )
    items = drift(d, h, grace_seconds=10)
    assert categories(items) == ["Pending", "Pending", "Pending"]
    assert not any(i.counted for i in items)


def test_after_grace_not_observed_becomes_drift() -> None:
    d, h = observe(
        spec(0, digest=D2),
        spec(1),
        reported=(status(0, digest=D1),),
        generation=6,
        observed=5,
        published_at=NOW - 30,
    )
    assert sorted(categories(drift(d, h, grace_seconds=10))) == ["Missing", "VersionMismatch"]


def test_starting_is_pending_within_grace_then_missing() -> None:
    d, h = observe(spec(0), reported=(status(0, state=STARTING),), published_at=NOW - 2)
    assert categories(drift(d, h, grace_seconds=10)) == ["Pending"]
    d, h = observe(spec(0), reported=(status(0, state=STARTING),), published_at=NOW - 60)
    assert categories(drift(d, h, grace_seconds=10)) == ["Missing"]


def test_stopping_undeclared_instance_is_pending_within_grace() -> None:
    d, h = observe(spec(0), reported=(status(0), status(3, state=STOPPING)), published_at=NOW - 1)
    assert categories(drift(d, h)) == ["Pending"]


def test_host_lost_one_item_per_env_and_no_instance_items() -> None:
    d = {
        "h1": HostDesiredState(
            host="h1",
            generation=3,
            instances=(spec(0, env="prod"), spec(1, env="prod"), spec(0, env="staging")),
        )
    }
    h = {"h1": HostObservation(name="h1", state="Lost", last_seen=NOW - 42, report=None)}
    items = drift(d, h)
    assert [(i.category, i.env, i.host) for i in items] == [
        (DriftCategory.HOST_LOST, "prod", "h1"),
        (DriftCategory.HOST_LOST, "staging", "h1"),
    ]
    assert items[0].since == NOW - 42  # since it was last seen
    assert "2 instance(s) of prod" in items[0].message
    assert (items[0].expected, items[0].actual) == ("Ready", "Lost")


def test_host_lost_serving_nothing_is_still_reported() -> None:
    h = {"h9": HostObservation(name="h9", state="Lost", last_seen=NOW - 5)}
    [item] = drift({}, h)
    assert item.category is DriftCategory.HOST_LOST and item.env == "" and item.host == "h9"


def test_declared_on_a_host_that_never_reported() -> None:
    d = {"h2": HostDesiredState(host="h2", generation=1, instances=(spec(0),))}
    [item] = drift(d, {})
    assert item.category is DriftCategory.MISSING and item.host == "h2"


def test_tag_moved() -> None:
    tag = TagObservation(
        env="prod",
        app="hello",
        component="web",
        image="demo/hello:1.0.0",
        deployed_digest=D1,
        current_digest=D2,
    )
    same = TagObservation(
        env="prod",
        app="hello",
        component="api",
        image="demo/api:1.0.0",
        deployed_digest=D1,
        current_digest=D1,
    )
    [item] = drift({}, {}, tags=[tag, same])
    assert item.category is DriftCategory.TAG_MOVED
    assert (item.env, item.app, item.component, item.expected, item.actual) == (
        "prod",
        "hello",
        "web",
        D1,
        D2,
    )
    assert "demo/hello:1.0.0" in item.message


def test_tag_observations_skip_pinned_and_unknown_images() -> None:
    deployed = [
        DeployedImage(env="prod", app="hello", component="web", image="demo/hello:1.0.0", digest=D1),
        DeployedImage(env="prod", app="hello", component="api", image=f"demo/api@{D1}", digest=D1),
        DeployedImage(env="prod", app="hello", component="db", image="demo/db:1", digest=D1),
    ]
    [obs] = tag_observations(deployed=deployed, current={"demo/hello:1.0.0": D2})
    assert (obs.component, obs.deployed_digest, obs.current_digest) == ("web", D1, D2)
    [item] = drift({}, {}, tags=[obs])
    assert item.category is DriftCategory.TAG_MOVED


def test_revision_rejected_keeps_its_since_and_first_error() -> None:
    rej = Rejection(
        env="prod",
        revision="b" * 40,
        applied_revision="a" * 40,
        errors=("manifests/prod/apps/hello.yaml:3:5: unknown field 'replicaz'", "other"),
        since=NOW - 7,
    )
    [item] = drift({}, {}, rejections=[rej])
    assert item.category is DriftCategory.REVISION_REJECTED
    assert (item.expected, item.actual, item.since) == ("b" * 40, "a" * 40, NOW - 7)
    assert (
        "replicaz" in item.message
        and "1 more" in item.message
        and "aaaaaaaaaaaa stays applied" in item.message
    )


def test_first_seen_keeps_since_stable() -> None:
    d, h = observe(spec(0), reported=())
    [first] = drift(d, h)
    later = compute_drift(desired=d, hosts=h, now=NOW + 50, first_seen={first.key: first.since})
    assert later[0].since == NOW
    assert later[0].key == first.key


def test_to_json_shape() -> None:
    d, h = observe(spec(0), reported=())
    [item] = drift(d, h)
    j = item.to_json()
    assert set(j) == {
        "category",
        "env",
        "app",
        "component",
        "host",
        "instance",
        "expected",
        "actual",
        "since",
        "message",
        "healedAt",
    }
    assert j["category"] == "Missing" and j["healedAt"] is None


def test_sorted_and_deterministic() -> None:
    d1, h1 = observe(spec(0, env="staging"), reported=(), host="b")
    d2, h2 = observe(spec(0, env="prod"), reported=(), host="a")
    items = drift({**d1, **d2}, {**h1, **h2})
    assert [i.env for i in items] == ["prod", "staging"]
