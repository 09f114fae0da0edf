"""The rollout planner's decisions (pure): tracking Git against what runs, the documents it
publishes, when a canary waits, advances, completes or is aborted, and with which numbers."""

from __future__ import annotations

from model.types import RolloutPolicy, RolloutStep, ShadowPolicy, Threshold
from reconciler.planner import rollout as r
from wire.control import HostDesiredState, HostReport, InstanceSpec, InstanceStatus
from wire.traffic import LATENCY_BUCKETS, DigestTraffic, Window

OLD, NEW, NEWER = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
POLICY = RolloutPolicy(
    strategy="canary", steps=(RolloutStep(weight=10, pause_s=60), RolloutStep(weight=50, pause_s=60),
                              RolloutStep(weight=100)),
    abort_when={"errorRate": Threshold(text="> 2%", value=0.02), "traps": Threshold(text="> 0", value=0),
                "p99": Threshold(text="> 1.5x baseline", value=1.5, relative=True)},
)


def ref(digest: str) -> r.Ref:
    return r.Ref(image=f"127.0.0.1:5000/demo/web@{digest}", digest=digest)


def spec(i: int, digest: str = NEW, **kw: object) -> InstanceSpec:
    return InstanceSpec(id=f"dev/web/web/{i}", env="dev", app="web", component="web", image=ref(digest).image,
                        digest=digest, route="/web", **kw)  # type: ignore[arg-type]


def started(policy: RolloutPolicy = POLICY) -> r.RolloutState:
    state, event = r.track(None, env="dev", app="web", policy=policy, git={"web": ref(NEW)}, runs={"web": ref(OLD)},
                           now=100.0)
    assert state is not None and event is not None and event.reason == "RolloutStarted"
    return state


def test_track_git_against_what_runs() -> None:
    state = started()
    assert (state.phase, state.step, state.weight) == ("Progressing", 0, 10)
    assert state.stable == {"web": ref(OLD)} and state.canary == {"web": ref(NEW)}
    # the same Git: the same rollout; Git back to the stable digest: cancelled
    assert r.track(state, env="dev", app="web", policy=POLICY, git={"web": ref(NEW)}, runs={"web": ref(OLD)},
                   now=101)[0] is state
    gone, event = r.track(state, env="dev", app="web", policy=POLICY, git={"web": ref(OLD)}, runs={"web": ref(OLD)},
                          now=101)
    assert gone is None and event is not None and event.reason == "RolloutCancelled"
    # its hosts Lost, nothing planned runs it: Git did not go back, the rollout is kept (tests/lab found it cancelled)
    assert r.track(state, env="dev", app="web", policy=POLICY, git={}, runs={"web": ref(OLD)}, now=101) == (state, None)
    assert r.track(state, env="dev", app="web", policy=POLICY, git={"web": ref(NEW)}, runs={}, now=101) == (state, None)
    # aborted: held back while Git names it; a newer digest starts again from the stable one
    aborted = r.RolloutState.from_json({**state.to_json(), "phase": r.ABORTED})
    assert r.track(aborted, env="dev", app="web", policy=POLICY, git={"web": ref(NEW)}, runs={"web": ref(OLD)},
                   now=102)[0] is aborted
    again, _ = r.track(aborted, env="dev", app="web", policy=POLICY, git={"web": ref(NEWER)}, runs={"web": ref(OLD)},
                       now=103)
    assert again is not None and again.stable == {"web": ref(OLD)} and again.canary == {"web": ref(NEWER)}
    # completed: its canary is what runs; no rollout until Git changes again
    done = r.RolloutState.from_json({**state.to_json(), "phase": r.COMPLETED})
    assert r.track(done, env="dev", app="web", policy=POLICY, git={"web": ref(NEW)}, runs={"web": ref(OLD)},
                   now=104)[0] is done
    # rolling, a new app, or shadow first
    assert r.track(None, env="dev", app="web", policy=None, git={"web": ref(NEW)}, runs={"web": ref(OLD)},
                   now=1) == (None, None)
    assert r.track(None, env="dev", app="web", policy=POLICY, git={"web": ref(NEW)}, runs={}, now=1) == (None, None)
    shadowed = started(RolloutPolicy(strategy="canary", steps=POLICY.steps, shadow=ShadowPolicy(sample=0.2)))
    assert (shadowed.phase, shadowed.step, shadowed.weight) == ("Shadow", -1, 0)


def test_overlay_runs_the_stable_digest_and_a_canary_beside_it() -> None:
    state = started()
    desired = {"h1": (spec(0), spec(1)), "h2": (spec(2),), "h3": (InstanceSpec(
        id="dev/other/x/0", env="dev", app="other", component="x", image="i", digest=OLD,
        traffic=r.TrafficSplit(stable=OLD, canary=NEW, weight=5)),)}
    out = r.overlay(desired, {"dev/web": state}, {"dev/web": POLICY})
    assert [s.id for s in out["h1"]] == ["dev/web/web/0", "dev/web/web/1", "dev/web/web/canary-0"]
    assert [s.digest for s in out["h1"]] == [OLD, OLD, NEW]
    assert {s.traffic for s in out["h1"]} == {r.TrafficSplit(stable=OLD, canary=NEW, weight=10)}
    assert [s.id for s in out["h2"]] == ["dev/web/web/2", "dev/web/web/canary-2"]
    assert out["h3"][0].traffic is None  # no rollout there any more
    assert r.without_canaries(out["h1"]) == out["h1"][:2]
    aborted = r.RolloutState.from_json({**state.to_json(), "phase": r.ABORTED})
    held = r.overlay(desired, {"dev/web": aborted}, {"dev/web": POLICY})
    assert [(s.id, s.digest, s.traffic) for s in held["h2"]] == [("dev/web/web/2", OLD, None)]


def _report(host: str, *, stable: tuple[int, int], canary: tuple[int, int], traps: int = 0, slow: bool = False,
            generation: int = 1, status: str = "Running") -> HostReport:
    def counts(n: int, at: float) -> tuple[int, ...]:
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[LATENCY_BUCKETS.index(at)] = n
        return tuple(buckets)

    return HostReport(name=host, observed_generation=generation, instances=(
        InstanceStatus(id="dev/web/web/canary-0", env="dev", app="web", component="web", digest=NEW, status=status),),
        traffic=(DigestTraffic(env="dev", app="web", component="web", digest=OLD, requests=stable[0],
                               errors=stable[1], latency=counts(stable[0], 0.005)),
                 DigestTraffic(env="dev", app="web", component="web", digest=NEW, requests=canary[0],
                               errors=canary[1], traps=traps, latency=counts(canary[0], 0.5 if slow else 0.005))))


def _published(state: r.RolloutState) -> dict[str, HostDesiredState]:
    docs = r.overlay({"h1": (spec(0),)}, {"dev/web": state}, {"dev/web": POLICY})
    return {h: HostDesiredState(host=h, generation=1, instances=s) for h, s in docs.items()}


def test_decide_waits_measures_advances_and_completes() -> None:
    state = started()
    reports = {"h1": _report("h1", stable=(100, 0), canary=(5, 0))}
    assert not r.canary_ready(_published(state), {"h1": _report("h1", stable=(0, 0), canary=(0, 0),
                                                                status="Starting")}, state)
    assert r.canary_ready(_published(state), reports, state)
    waiting = r.decide(state, POLICY, now=101, incapable=[], ready=False, reports=reports)
    assert waiting.state is state
    measuring = r.decide(state, POLICY, now=101, incapable=[], ready=True, reports=reports).state
    assert measuring.step_started_at == 101 and measuring.baseline
    later = {"h1": _report("h1", stable=(1000, 1), canary=(105, 0))}
    within = r.decide(measuring, POLICY, now=130, incapable=[], ready=True, reports=later)
    assert within.state.phase == "Progressing" and within.state.measured["canary"]["requests"] == 100
    quiet = r.decide(measuring, POLICY, now=161, incapable=[], ready=True,
                     reports={"h1": _report("h1", stable=(1000, 1), canary=(9, 0))})
    assert quiet.state.phase == "Progressing" and quiet.state.step == 0 and "waiting for 10 canary" in \
        quiet.state.message
    advanced = r.decide(measuring, POLICY, now=161, incapable=[], ready=True, reports=later)
    assert advanced.republish and advanced.event is not None and advanced.event.reason == "RolloutAdvanced"
    assert (advanced.state.step, advanced.state.weight, advanced.state.step_started_at) == (1, 50, 161)
    done = r.decide(advanced.state, POLICY, now=222, incapable=[], ready=True,
                    reports={"h1": _report("h1", stable=(1100, 1), canary=(205, 0))})
    assert (done.state.phase, done.state.weight) == ("Completed", 100) and done.republish


def test_decide_aborts_with_the_numbers() -> None:
    measuring = r.decide(started(), POLICY, now=101, incapable=[], ready=True,
                         reports={"h1": _report("h1", stable=(100, 0), canary=(10, 0))}).state
    bad = {"h1": _report("h1", stable=(200, 0), canary=(40, 9))}
    aborted = r.decide(measuring, POLICY, now=105, incapable=[], ready=True, reports=bad)
    assert aborted.state.phase == "Aborted" and aborted.state.weight == 0 and aborted.republish
    assert aborted.state.reason == "AbortThresholdExceeded"
    assert "errorRate 30.0% > 2% (stable 0.0%)" in aborted.state.message, aborted.state.message
    assert aborted.event is not None and aborted.event.warning and aborted.event.reason == "RolloutAborted"
    trapped = r.decide(measuring, POLICY, now=105, incapable=[], ready=True,
                       reports={"h1": _report("h1", stable=(200, 0), canary=(11, 0), traps=1)})
    assert trapped.state.phase == "Aborted" and "traps 1 > 0" in trapped.state.message
    slow = r.decide(measuring, POLICY, now=105, incapable=[], ready=True,
                    reports={"h1": _report("h1", stable=(200, 0), canary=(40, 0), slow=True)})
    assert slow.state.phase == "Aborted" and "p99" in slow.state.message, slow.state.message


def test_an_older_agent_makes_the_rollout_wait() -> None:
    state = started()
    waiting = r.decide(state, POLICY, now=101, incapable=["old-1"], ready=False, reports={})
    assert waiting.state.phase == "Waiting" and waiting.state.reason == "HostCannotSplit" and waiting.republish
    assert "old-1" in waiting.state.message and waiting.event is not None and waiting.event.warning
    docs = r.overlay({"h1": (spec(0),)}, {"dev/web": waiting.state}, {"dev/web": POLICY})
    assert [(s.digest, s.traffic) for s in docs["h1"]] == [(OLD, None)]  # the stable digest, no split
    resumed = r.decide(waiting.state, POLICY, now=102, incapable=[], ready=False, reports={})
    assert resumed.state.phase == "Progressing" and resumed.republish


def test_a_lost_host_makes_the_rollout_wait_and_its_step_start_again() -> None:
    """Found by tests/lab: a step past its pause completed on the reports a cut-off host sent before."""
    state = r.RolloutState.from_json({**started().to_json(), "stepStartedAt": 100.0})
    waiting = r.decide(state, POLICY, now=500, incapable=[], ready=True, reports={}, lost=["edge-1"])
    assert (waiting.state.phase, waiting.state.reason, waiting.state.step_started_at) == ("Waiting", "HostLost", None)
    assert "edge-1 Lost" in waiting.state.message and waiting.event is not None and waiting.event.warning
    assert r.decide(waiting.state, POLICY, now=501, incapable=[], ready=True, reports={},
                    lost=["edge-1"]).state is waiting.state
    resumed = r.decide(waiting.state, POLICY, now=502, incapable=[], ready=True, reports={})
    assert resumed.state.phase == "Progressing" and "reports again" in resumed.state.message
    assert resumed.state.step_started_at is None  # measured afresh from now on


def test_canary_instances_count_against_host_capacity() -> None:
    state = started()
    desired = {"h1": (spec(0), spec(1)), "h2": (spec(2),)}
    # h1 is full with its two planned instances: no canary anywhere (all or nothing), the stable digest alone
    full = r.no_room(desired, {"dev/web": state}, {"h1": 2, "h2": 5})
    assert full == {"dev/web": ["h1 (2 planned + 1 canary > maxInstances 2)"]}
    docs = r.overlay(desired, {"dev/web": state}, {"dev/web": POLICY}, {"h1": 2, "h2": 5})
    assert [(s.id, s.digest, s.traffic) for h in ("h1", "h2") for s in docs[h]] == [
        ("dev/web/web/0", OLD, None), ("dev/web/web/1", OLD, None), ("dev/web/web/2", OLD, None)]
    assert all(len(docs[h]) <= cap for h, cap in (("h1", 2), ("h2", 5)))  # never overcommitted
    waiting = r.decide(state, POLICY, now=101, incapable=[], ready=False, reports={}, full=full["dev/web"])
    assert (waiting.state.phase, waiting.state.reason) == ("Waiting", "NoCapacity") and waiting.republish
    assert "no room for the canary instances on host(s) h1 (2 planned + 1 canary > maxInstances 2)" in \
        waiting.state.message and waiting.event is not None and waiting.event.reason == "RolloutWaiting"
    assert r.decide(waiting.state, POLICY, now=102, incapable=[], ready=False, reports={},
                    full=full["dev/web"]).state is waiting.state  # still no room: nothing new
    # room again (a bigger host): it resumes, and the canaries fit
    assert r.no_room(desired, {"dev/web": waiting.state}, {"h1": 3, "h2": 5}) == {}
    resumed = r.decide(waiting.state, POLICY, now=103, incapable=[], ready=False, reports={})
    assert resumed.state.phase == "Progressing" and "room for the canary" in resumed.state.message
    docs = r.overlay(desired, {"dev/web": resumed.state}, {"dev/web": POLICY}, {"h1": 3, "h2": 5})
    assert [s.id for s in docs["h1"]] == ["dev/web/web/0", "dev/web/web/1", "dev/web/web/canary-0"]
    # two rollouts sharing a host with room for one canary: the first (by key) gets it, the other waits
    other = r.RolloutState.from_json({**state.to_json(), "app": "api"})
    shared = {"h1": (spec(0), InstanceSpec(id="dev/api/web/0", env="dev", app="api", component="web",
                                           image=ref(NEW).image, digest=NEW))}
    assert r.no_room(shared, {"dev/web": state, "dev/api": other}, {"h1": 3}) == {
        "dev/web": ["h1 (3 planned + 1 canary > maxInstances 3)"]}


def test_breaches_compare_with_the_baseline_over_a_floor() -> None:
    policy = RolloutPolicy(strategy="canary", steps=POLICY.steps,
                           abort_when={"errorRate": Threshold(text="> 2x baseline", value=2, relative=True)},
                           shadow=ShadowPolicy(sample=1.0, min_match=0.9))
    # 1.5% against a perfect baseline: under 2x the 1% floor
    assert r.breaches(policy, Window(requests=100), Window(requests=200, errors=3)) == []
    assert r.breaches(policy, Window(requests=100, errors=5), Window(requests=100, errors=11))
    assert r.breaches(policy, Window(), Window(requests=5, errors=5)) == []  # too few to judge
    found = r.breaches(policy, Window(), Window(shadow_requests=10, shadow_mismatches=2))
    assert found and found[0].startswith("shadow status match 80.0%")


def test_fuel_per_request_against_the_stable_digest() -> None:
    policy = RolloutPolicy(strategy="canary", steps=POLICY.steps,
                           abort_when={"fuel": Threshold(text="> 1.2x baseline", value=1.2, relative=True)})
    stable = Window(requests=50, fuel=50 * 1000, fuel_requests=50)
    assert r.breaches(policy, stable, Window(requests=20, fuel=20 * 1150, fuel_requests=20)) == []
    found = r.breaches(policy, stable, Window(requests=20, fuel=20 * 5000, fuel_requests=20))
    assert found == ["fuel 5000/req > 1.2x baseline 1000/req (limit 1200/req)"], found
    assert r.breaches(policy, stable, Window(requests=9, fuel=9 * 5000, fuel_requests=9)) == []  # too few
    assert r.breaches(policy, Window(requests=50), Window(requests=20, fuel=20 * 5000, fuel_requests=20)) == []
    unmeasured = Window(requests=40)  # `wasmtime serve`: requests, no fuel counted: never judged, shown so
    assert r.breaches(policy, Window(requests=40), unmeasured) == []
    assert r.fuel_figures(Window(requests=40), unmeasured) == "fuel unmeasured"
    assert unmeasured.to_json()["fuelPerRequest"] is None
    absolute = RolloutPolicy(strategy="canary", steps=POLICY.steps,
                             abort_when={"fuel": Threshold(text="> 4000", value=4000)})
    assert r.breaches(absolute, Window(), Window(requests=20, fuel=20 * 5000, fuel_requests=20))
    # the counters travel in the reports and subtract like the others
    t = DigestTraffic(env="dev", app="web", component="web", digest=NEW, requests=30, fuel=9000, fuel_requests=30)
    assert DigestTraffic.from_json(t.to_json()) == t
    before = DigestTraffic(env="dev", app="web", component="web", digest=NEW, requests=10, fuel=3000, fuel_requests=10)
    assert r.since(t, before).fuel_per_request == 300


def test_aborted_completed_and_waiting_rollouts_reach_the_webhooks() -> None:
    from reconciler.controller.notify import notified

    assert all(notified(reason) for reason in ("RolloutAborted", "RolloutCompleted", "RolloutWaiting"))
    assert not notified("RolloutAdvanced")


def test_state_survives_json() -> None:
    state = started()
    assert r.RolloutState.from_json(state.to_json()) == state
    status = state.status_json(POLICY)
    assert (status["phase"], status["step"], status["steps"], status["weight"]) == ("Progressing", 1, 3, 10)
