"""Nothing in Git names the reconciler's files or credentials, secrets stay in their environments, and
outbound calls go only where the operator allows — tried as an attacker with write access to one
environment's folder would, against real processes: ``driftless up``'s platform (registry, bare Git
repository pushed to, the reconciler with a scoped --secrets-file and --outbound-allow, one host).

Capture HTTP servers on 127.0.0.1 stand in for the attacker's endpoints: ``allowed`` (an endpoint the
operator allowed, e.g. a compromised CI), ``relay`` (allowed; answers every request with a redirect to
``outside``) and ``outside`` (not allowed). Each attack asserts its rejection at file:line and that
nothing (or no credential) reached them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web as aioweb

from reconciler.controller.outbound import OutboundAllowList
from reconciler.controller.secrets import Secret, SecretStore, read_scoped_secrets
from shared.errors import UsageError
from tests.support.components import build
from tests.support.fingerprints import state_key, unkeyed
from tests.support.http_server import ThreadedServer
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.postgres import PostgresServer
from tests.support.procs import free_port, wait_until
from wire.control import HostDesiredState, InstanceSpec, secret_fingerprint

HOST = "h1"
PROD_DB = "pr0d-" + secrets.token_hex(8)
DEV_DB = "d3v-" + secrets.token_hex(8)
STATUS_TOKEN = "ghp_" + secrets.token_hex(12)
HOOK_SECRET = "h00k-" + secrets.token_hex(8)


class Capture:
    """Records every request (method, path, headers, body); answers 200, or a redirect to ``redirect``."""

    def __init__(self, *, redirect: str | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.redirect = redirect
        app = aioweb.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedServer(app)

    async def _handle(self, request: aioweb.Request) -> aioweb.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers), await request.read()))
        if self.redirect is not None:
            raise aioweb.HTTPTemporaryRedirect(self.redirect + request.path)
        return aioweb.json_response({"ok": True}, status=201)

    @property
    def url(self) -> str:
        return self._server.url

    def text(self) -> str:
        return "".join(f"{m} {p} {h} {b!r}" for m, p, h, b in self.requests)

    def close(self) -> None:
        self._server.close()


def web(greeting: Any) -> dict[str, Any]:
    return {"name": "web", "image": "demo/hello:1.0.0", "config": {"GREETING": greeting, "MODE": "plain"},
            "expose": "/hello"}


BASELINE = {
    "dev/environment.yaml": environment("dev", prefix="/dev", selector={"cloud": "aws"}),
    "dev/apps/hello.yaml": application("hello", [web({"secretRef": "dev-db"})]),
    "prod/environment.yaml": environment("prod", prefix="/prod", selector={"cloud": "aws"}),
    "prod/apps/hello.yaml": application("hello", [web({"secretRef": "prod-db"})]),
}


def env_with(name: str, extra: str) -> str:
    """An environment.yaml with ``extra`` (spec fields, 10 spaces deep like the rest) appended."""
    return environment(name, prefix=f"/{name}", selector={"cloud": "aws"}).rstrip(" ") + extra


class World:
    def __init__(self, root: Path) -> None:
        self.outside = Capture()
        self.allowed = Capture()
        self.relay = Capture(redirect=self.outside.url)
        self.secrets_file = root / "secrets.yaml"
        self.write_secrets(prod_db_environments="[prod]")
        self.p: LocalPlatform = local_platform(
            root / "platform", hosts={HOST: {"cloud": "aws"}},
            reconciler_args=["--secrets-file", str(self.secrets_file), "--outbound-allow", self.allowed.url,
                             "--outbound-allow", f"{self.relay.url}/"])
        self.p.up(tree=dict(BASELINE), components={"demo/hello:1.0.0": build("hello")})

    def write_secrets(self, *, prod_db_environments: str) -> None:
        tmp = self.secrets_file.with_name("secrets.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'prod-db: {{value: "{PROD_DB}", environments: {prod_db_environments}}}\n'
                    f'dev-db:\n  value: "{DEV_DB}"\n  environments: [dev]\n'
                    f'status-token: {{value: "{STATUS_TOKEN}", environments: [prod]}}\n'
                    f'hook-secret: {{value: "{HOOK_SECRET}", environments: [prod]}}\n')
        os.replace(tmp, self.secrets_file)

    def greeting(self, env: str) -> str:
        try:
            r = httpx.get(f"{self.p.ingress(HOST)}/{env}/hello", timeout=5)
        except httpx.HTTPError:
            return ""
        return r.text if r.status_code == 200 else ""

    def env_state(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.p.reconciler.get("/api/v1/environments")["environments"]}

    def applied(self, env: str | None = None) -> str:
        """The revision ``env`` applied; without ``env``, the one every environment applied ("" if they differ)."""
        revisions = {name: e.get("revision") for name, e in self.env_state().items()}
        if env is not None:
            return str(revisions.get(env))
        return str(next(iter(set(revisions.values())))) if len(set(revisions.values())) == 1 else ""

    def rejected(self, revision: str) -> list[dict[str, Any]]:
        """The problems of ``revision``, from the environments that rejected it (each environment applies on its own)."""
        def found() -> list[dict[str, Any]] | None:
            errors = [err for e in self.env_state().values() if (rej := e.get("rejected"))
                      and rej["revision"] == revision for err in rej["errors"]]
            return errors or None

        errors = wait_until(found, timeout=30, what=f"revision {revision[:12]} rejected")
        assert errors is not None
        return errors

    def restore(self) -> None:
        self.p.git.push(dict(BASELINE), "baseline")
        wait_until(lambda: self.applied() == self.p.git.head(), timeout=30, what="the baseline applied")

    def close(self) -> None:
        for c in (self.outside, self.allowed, self.relay):
            c.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("boundaries"))
    try:
        wait_until(lambda: PROD_DB in w.greeting("prod") and DEV_DB in w.greeting("dev"), timeout=60,
                   what="each environment served its own secret")
        yield w
    finally:
        w.p.stop()
        w.close()


def _line_of(text: str, needle: str) -> int:
    import textwrap

    return next(i for i, line in enumerate(textwrap.dedent(text).splitlines(keepends=True), 1) if needle in line)


def test_a_token_file_is_refused_at_its_line_and_nothing_is_sent(world: World) -> None:
    w = world
    before = w.applied("dev")
    admin_token = w.p.admin_token_file
    extra = f"""\
          commitStatus:
          - provider: gitlab
            url: {w.allowed.url}
            repository: acme/manifests
            token: {{file: {admin_token}}}
        """
    env = env_with("dev", extra)
    revision = w.p.git.push({"dev/environment.yaml": env}, "dev: report commit status with the admin token")
    errors = w.rejected(revision)
    (error,) = errors
    assert error["file"] == "dev/environment.yaml" and error["line"] == _line_of(env, "token: {file:"), errors
    assert error["code"] == "removed-field"
    assert "secretRef" in error["text"] and "--secrets-file" in error["text"], error["text"]
    assert w.applied("dev") == before  # the last good state stays
    time.sleep(1.5)  # status loop ticks: a status would have gone out by now
    assert w.allowed.requests == [] and w.outside.requests == []
    assert admin_token.read_text().strip() not in w.allowed.text() + w.outside.text()
    w.restore()


def test_a_secret_scoped_to_another_environment_rejects_the_reference(world: World) -> None:
    w = world
    before = w.applied("dev")
    extra = f"""\
          notifications:
          - url: {w.allowed.url}/hook
            secretName: hook-secret
          commitStatus:
          - provider: github
            url: {w.allowed.url}
            repository: acme/manifests
            token: {{secretRef: status-token}}
        """
    env = env_with("dev", extra)
    app = application("hello", [web({"secretRef": "prod-db"})])
    revision = w.p.git.push({"dev/environment.yaml": env, "dev/apps/hello.yaml": app},
                            "dev: the prod database password, the status token and the webhook secret")
    errors = sorted(w.rejected(revision), key=lambda e: (e["file"], e["line"]))
    assert [(e["file"], e["code"]) for e in errors] == [
        ("dev/apps/hello.yaml", "secret-out-of-scope"),
        ("dev/environment.yaml", "secret-out-of-scope"),
        ("dev/environment.yaml", "secret-out-of-scope")], errors
    config, hook, token = errors
    assert config["line"] == _line_of(app, '"GREETING"')
    assert hook["line"] == _line_of(env, "secretName: hook-secret")
    assert token["line"] == _line_of(env, "token: {secretRef: status-token}")
    for e, name in ((config, "prod-db"), (hook, "hook-secret"), (token, "status-token")):
        text = e["text"]
        assert f"secret {name!r}" in text and "allows it in prod" in text and "'dev'" in text, text
        assert "environments: [..., dev]" in text, text  # how to fix
    assert w.applied("dev") == before
    # the host never got the prod value for a dev instance; dev still serves its own
    assert DEV_DB in w.greeting("dev") and PROD_DB not in w.greeting("dev")
    desired = json.loads((w.p.data / "hosts" / HOST / "desired.json").read_text())
    dev_values = [v for i in desired["instances"] if i["env"] == "dev" for v in i["config"].values()]
    assert DEV_DB in dev_values and PROD_DB not in dev_values, dev_values
    time.sleep(1.5)
    assert w.allowed.requests == [] and w.outside.requests == []
    w.restore()


def test_widening_a_scope_applies_the_rejected_revision(world: World) -> None:
    """The operator's fix for a secret-out-of-scope rejection is the secrets file: once dev may use the
    secret, the same revision applies (no new commit); taking it away again needs Git first."""
    w = world
    app = application("hello", [web({"secretRef": "prod-db"})])
    revision = w.p.git.push({"dev/apps/hello.yaml": app}, "dev: the shared database")
    assert [e["code"] for e in w.rejected(revision)] == ["secret-out-of-scope"]
    w.write_secrets(prod_db_environments="[prod, dev]")
    wait_until(lambda: w.applied("dev") == revision, timeout=30, what="the same revision applied")
    wait_until(lambda: PROD_DB in w.greeting("dev"), timeout=30, what="dev served the now shared secret")
    w.write_secrets(prod_db_environments="[prod]")  # refused while the applied revision uses it in dev
    wait_until(lambda: any(e["reason"] == "SecretsRefused" and "prod-db (used by dev)" in e["message"]
                           for e in w.p.reconciler.get("/api/v1/events?limit=200")["events"]), timeout=20,
               what="the narrowed file refused")
    assert PROD_DB in w.greeting("dev")
    w.restore()  # Git first, then the scope

    def reloads() -> int:
        return sum(e["reason"] == "SecretsReloaded" for e in w.p.reconciler.get("/api/v1/events?limit=500")["events"])

    before = reloads()
    w.write_secrets(prod_db_environments="[prod]")
    wait_until(lambda: reloads() > before, timeout=20, what="the narrowed file taken")
    wait_until(lambda: DEV_DB in w.greeting("dev"), timeout=30, what="dev back on its own secret")


def test_an_outbound_url_outside_the_allow_list_rejects_the_environment(world: World) -> None:
    w = world
    before = w.applied("prod")
    extra = f"""\
          notifications:
          - url: {w.outside.url}/services/T000/B000/XXXXSECRETPATH
            secretName: hook-secret
          commitStatus:
          - provider: github
            url: {w.outside.url}
            repository: acme/manifests
            token: {{secretRef: status-token}}
          - provider: github
            url: {w.allowed.url}@evil.example
            repository: acme/manifests
            token: {{secretRef: status-token}}
        """
    env = env_with("prod", extra)
    revision = w.p.git.push({"prod/environment.yaml": env}, "prod: statuses and webhooks to an unknown server")
    errors = sorted(w.rejected(revision), key=lambda e: e["line"])
    assert [(e["file"], e["code"]) for e in errors] == [("prod/environment.yaml", "outbound-not-allowed")] * 3, errors
    assert [e["line"] for e in errors] == [_line_of(env, "XXXXSECRETPATH"), _line_of(env, f"url: {w.outside.url}\n"),
                                           _line_of(env, "@evil.example")]
    assert "--outbound-allow" in errors[0]["text"] and w.outside.url in errors[0]["text"]
    assert "XXXXSECRETPATH" not in json.dumps(errors)  # a webhook's path may be a credential: never shown
    assert w.applied("prod") == before
    time.sleep(1.5)
    assert w.outside.requests == [] and w.allowed.requests == []
    w.restore()


def test_a_redirect_from_an_allowed_url_carries_no_credential(world: World) -> None:
    w = world
    extra = f"""\
          notifications:
          - url: {w.relay.url}/hook
            secretName: hook-secret
          commitStatus:
          - provider: github
            url: {w.relay.url}
            repository: acme/manifests
            token: {{secretRef: status-token}}
          - provider: gitlab
            url: {w.relay.url}/api/v4
            repository: acme/manifests
            token: {{secretRef: status-token}}
        """
    dev_hook = f"""\
          notifications:
          - url: {w.relay.url}/hook
            events: [Rejected]
        """
    w.p.git.push({"prod/environment.yaml": env_with("prod", extra), "dev/environment.yaml": env_with("dev", dev_hook)},
                 "prod: statuses and webhooks via the relay")
    wait_until(lambda: w.applied() == w.p.git.head(), timeout=30, what="applied")
    broken = application("hello", [{"name": "web", "image": "demo/hello:1.0.0", "replicas": 3}])
    w.p.git.push({"dev/apps/hello.yaml": broken}, "a broken dev app: a Rejected webhook")

    def relayed() -> bool:
        paths = [p for _, p, _, _ in w.relay.requests]
        return any(p.startswith("/repos/") for p in paths) and any(p.startswith("/api/v4/") for p in paths) \
            and "/hook" in paths

    wait_until(relayed, timeout=30, what="the relay asked for each (and answered with a redirect)")
    tokens = [h.get("Authorization") or h.get("PRIVATE-TOKEN") for _, p, h, _ in w.relay.requests if p != "/hook"]
    assert f"Bearer {STATUS_TOKEN}" in tokens and STATUS_TOKEN in tokens  # the allowed URL got them, as configured
    time.sleep(1.5)
    assert w.outside.requests == [], w.outside.text()  # nothing followed the redirect, so no credential either
    log = "".join(f.read_text() for f in (w.p.data / "logs").glob("reconciler*.log"))
    assert STATUS_TOKEN not in log and HOOK_SECRET not in log
    w.restore()


def test_fingerprints_are_keyed_and_survive_a_restart(world: World) -> None:
    w = world

    def of_the_file() -> dict[str, str]:  # (age values another test decrypted are known only until a restart)
        shown = w.p.reconciler.get("/api/v1/plan-inputs")["secrets"]
        return {name: fp for name, fp in shown.items() if not name.startswith("age-")}

    shown = of_the_file()
    assert set(shown) == {"prod-db", "dev-db", "status-token", "hook-secret"}, shown
    key = state_key(w.p.data / "reconciler" / "state.db")
    assert shown["prod-db"] == secret_fingerprint("prod-db", PROD_DB, key=key) != unkeyed("prod-db", PROD_DB)
    assert PROD_DB not in json.dumps(shown) and key.hex() not in json.dumps(shown)
    generation = w.p.reconciler.host(HOST)["generation"]
    w.p.reconciler.stop()
    w.p.reconciler.start()
    wait_until(lambda: of_the_file() == shown, timeout=30, what="the same fingerprints after a restart")
    time.sleep(1.0)
    assert w.p.reconciler.host(HOST)["generation"] == generation  # nothing republished, nothing restarted
    assert PROD_DB in w.greeting("prod")


def test_a_value_scoped_elsewhere_is_never_revealed(tmp_path: Path) -> None:
    """The last line: even a document naming a prod-only secret for a dev instance (published before the
    scope narrowed, or by a bug) gets no value in the host's long-poll answer."""
    path = tmp_path / "secrets.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'prod-db: {{value: "{PROD_DB}", environments: [prod]}}\nplain: "{DEV_DB}"\n')
    store = SecretStore(path, fingerprint_key=b"k" * 32)
    fps = store.fingerprints()

    def spec(env: str, name: str) -> InstanceSpec:
        return InstanceSpec(id=f"{env}/a/web/0", env=env, app="a", component="web", image="r/x@sha256:" + "a" * 64,
                            digest="sha256:" + "a" * 64, config={"K": fps[name]}, secrets=("K",))

    doc = store.reveal(HostDesiredState(host="h", generation=1, instances=(
        spec("dev", "prod-db"), spec("prod", "prod-db"), spec("dev", "plain"))))
    dev, prod, plain = doc.instances
    assert dev.config == {"K": fps["prod-db"]} and dev.fingerprints == {}
    assert prod.config == {"K": PROD_DB} and plain.config == {"K": DEV_DB}  # a plain secret: every environment
    assert store.get_for("prod-db", "dev") is None and store.get_for("prod-db", "prod") == PROD_DB


def test_two_reconcilers_sharing_postgresql_show_the_same_keyed_fingerprints(tmp_path: Path,
                                                                             postgres: PostgresServer) -> None:
    """The key lives in the shared state: a follower shows (and, once it leads, publishes) the same
    fingerprints as the leader, so a failover restarts nothing for a secret."""
    state = postgres.new_database()
    path = tmp_path / "secrets.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'prod-db: {{value: "{PROD_DB}", environments: [prod]}}\n')
    p = local_platform(tmp_path / "platform", reconciler_args=["--state", state, "--secrets-file", str(path)])
    b_port = free_port()
    try:
        p.up(tree={"prod/environment.yaml": BASELINE["prod/environment.yaml"],
                   "prod/apps/hello.yaml": BASELINE["prod/apps/hello.yaml"]},
             components={"demo/hello:1.0.0": build("hello")}, hosts=False)
        p._spawn("reconciler-b", [*p.reconciler_command(), "--listen", f"127.0.0.1:{b_port}",
                                  "--data", str(p.data / "reconciler-b")])

        def shown(url: str) -> Any:
            try:
                r = httpx.get(f"{url}/api/v1/plan-inputs", headers=p.read_headers, timeout=5)
            except httpx.HTTPError:
                return None
            return r.json()["secrets"] if r.status_code == 200 else None

        leader = wait_until(lambda: shown(p.control_url), timeout=20, what="the leader's fingerprints")
        follower = wait_until(lambda: shown(f"http://127.0.0.1:{b_port}"), timeout=20, what="the follower's")
        with psycopg.connect(state) as conn:
            row = conn.execute("SELECT key FROM fingerprint_key WHERE id=1").fetchone()
        assert row is not None
        expected = secret_fingerprint("prod-db", PROD_DB, key=bytes(row[0]))
        assert leader == follower == {"prod-db": expected} and expected != unkeyed("prod-db", PROD_DB)
    finally:
        p.stop()


def test_the_allow_list_matches_by_url_parts_not_text() -> None:
    allow = OutboundAllowList(["https://ci.example.com/hooks", "http://127.0.0.1:8099/"])
    assert allow.allows("https://ci.example.com/hooks") and allow.allows("https://ci.example.com/hooks/a?x=1")
    assert allow.allows("https://CI.example.com:443/hooks/b") and allow.allows("http://127.0.0.1:8099/anything")
    assert allow.allows("https://api.github.com/repos/a/b/statuses/c")  # the defaults: the public APIs
    assert allow.allows("https://gitlab.com/api/v4/projects/1/statuses/c")
    for refused in ("https://ci.example.com/hooksmith", "https://ci.example.com.evil.example/hooks",
                    "https://ci.example.com/hooks@evil.example/", "https://evil.example/hooks",
                    "http://ci.example.com/hooks", "https://ci.example.com:8443/hooks",
                    "https://ci.example.com/hooks/../admin", "https://ci.example.com/hooks/%2e%2e/admin",
                    "http://127.0.0.1:8098/", "https://gitlab.com/api/v3/x", "not a url"):
        assert not allow.allows(refused), refused
    for bad in ("ftp://x/", "https://user:pw@x/", "https://x/?q=1", "x"):
        with pytest.raises(UsageError, match="--outbound-allow"):
            OutboundAllowList([bad])


def test_the_secrets_file_says_what_is_wrong_without_quoting_a_value(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    for text, expected in (("a: {value: s3cr3tv4lue}\n", "needs environments"),
                           ("a: {value: s3cr3tv4lue, environments: []}\n", "needs environments"),
                           ("a: {value: s3cr3tv4lue, environments: [prod], env: [dev]}\n", "unknown field"),
                           ("a: {environments: [prod]}\n", "needs value"),
                           ("a: [s3cr3tv4lue]\n", "must be a string value or")):
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(UsageError, match=expected) as caught:
            read_scoped_secrets(path)
        assert "s3cr3tv4lue" not in str(caught.value) + str(caught.value.hint)
    path.write_text('a: {value: x, environments: ["*"]}\nb: {value: "y", environments: [dev, prod]}\nc: 3\n')
    found = read_scoped_secrets(path)
    assert found["a"].environments is None and found["b"].environments == {"dev", "prod"}
    assert found["c"] == Secret("3") and found["c"].allows("anything")


def test_the_reconciler_refuses_the_unscoped_notification_secrets_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    base = [sys.executable, "-m", "driftless", "reconcile", "--repo", str(tmp_path), "--data", str(tmp_path / "d"),
            "--registry", "http://127.0.0.1:9", "--token-file", str(token)]
    r = subprocess.run([*base, "--notification-secrets-file", str(token)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--secrets-file" in r.stderr and "environments: [ENV]" in r.stderr, r.stderr
    r = subprocess.run([*base, "--outbound-allow", "https://user:pw@ci.example.com/"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--outbound-allow" in r.stderr and "user:pw" not in r.stderr, r.stderr


def test_a_new_secrets_file_cannot_scope_away_a_secret_the_applied_revision_uses(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"

    def write(text: str) -> None:
        tmp = path.with_name("new.yaml")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    write('db: {value: "one", environments: [dev, prod]}\n')
    store = SecretStore(path, fingerprint_key=b"k" * 32)
    uses = {"db": frozenset({"dev", "prod"})}
    write('db: {value: "one", environments: [prod]}\n')
    why = store.reload(required=uses)
    assert why and "db (used by dev)" in why and "remove those references from Git first" in why, why
    assert store.get_for("db", "dev") == "one"  # the previous secrets stay
    write('db: {value: "two", environments: ["*"]}\n')
    assert store.reload(required=uses) == "" and store.get_for("db", "dev") == "two"


def test_deliveries_check_the_allow_list_and_the_scope_again(world: World) -> None:
    """The load-time checks have a second line in the senders: a notification to a URL outside the
    allow-list, or signed with a secret scoped elsewhere, is not sent (logged, counted as failed)."""
    from model.types import Environment, Notification
    from reconciler.controller.notify import Notifier

    store = SecretStore(world.secrets_file)
    allow = OutboundAllowList([world.allowed.url])
    environments = {"dev": Environment(name="dev", notifications=(
        Notification(url=f"{world.outside.url}/x"),
        Notification(url=f"{world.allowed.url}/scoped", secret_name="hook-secret")))}
    notifier = Notifier(environments=lambda: environments, secret=store.get_for, allowed=allow.allows)
    try:
        notifier(type="Warning", reason="Rejected", message="m", env="dev")
        wait_until(notifier.idle, timeout=10, what="deliveries done")
    finally:
        notifier.close()
    assert notifier.failed == 2 and notifier.sent == 0
    assert world.outside.requests == [] and not any(p == "/scoped" for _, p, _, _ in world.allowed.requests)


def test_an_age_value_bound_to_prod_is_refused_in_dev(world: World) -> None:
    """``driftless secrets encrypt --env prod`` binds the value inside the ciphertext: copied into dev's
    file it rejects dev at its line; in prod's it is served."""
    w = world
    value = "b0und-" + secrets.token_hex(8)
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "encrypt", "--recipient", w.p.age_recipient(),
                        "--env", "prod"], input=value, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("age: |\n"), r.stderr
    armor = "\n".join(line.strip() for line in r.stdout.splitlines()[1:]) + "\n"
    app = application("hello", [web({"age": armor})])
    revision = w.p.git.push({"dev/apps/hello.yaml": app}, "dev: prod's encrypted value, copied")
    (error,) = w.rejected(revision)
    assert error["code"] == "secret-out-of-scope" and error["file"] == "dev/apps/hello.yaml", error
    assert error["line"] == _line_of(app, '"GREETING"') and "bound to environment(s) prod" in error["text"]
    assert "--env dev" in error["text"] and value not in json.dumps(error)
    assert DEV_DB in w.greeting("dev")
    w.p.git.push({"dev/apps/hello.yaml": BASELINE["dev/apps/hello.yaml"], "prod/apps/hello.yaml": app},
                 "prod: its own encrypted value")
    wait_until(lambda: value in w.greeting("prod"), timeout=30, what="prod served its bound value")
    assert value not in w.greeting("dev")
    w.restore()
