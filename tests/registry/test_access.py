"""Trust: per-repository access control (--access-policy), password checks off the event loop, cached
and rate-limited. Real ``driftless registry serve`` processes on loopback, httpx, skopeo and oras-py.

Each hole is tried: the attacking request fails with the right OCI error, and nothing changed (the
manifest, tag, blob or upload session is as it was)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import oras.client
import pytest

from driftless.cli import main
from tests.registry.conftest import OCI_MANIFEST, Oci, error_code, sha256, start_registry, write_htpasswd
from tests.registry.test_skopeo import skopeo
from tests.support.procs import wait_until

PASSWORDS = {"root": "r00t", "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
POLICY = """\
# who may do what, by repository
admins: [root]
repositories:
  "**":
    defaultPolicy: [pull]            # any user may pull what no longer pattern covers
  "demo/**":
    policies:
      - users: [alice]
        actions: [pull, push, delete]
    defaultPolicy: [pull]
    anonymousPolicy: [pull]
  "private/**":
    policies:
      - users: [alice]
        actions: [pull, push]
  "team/**":
    policies:
      - users: [carol]
        actions: [pull, push]
      - users: [bob]
        actions: [push]
"""


@dataclass
class Guarded:
    url: str
    host: str
    root: Path
    demo: str  # digest of demo/app:v1
    demo_layer: str
    private: str  # digest of private/secret:v1
    private_layer: str

    def client(self, user: str | None = None, password: str | None = None) -> Oci:
        if user is None:
            return Oci(self.url)
        return Oci(self.url, auth=(user, password if password is not None else PASSWORDS[user]))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    base = tmp_path_factory.mktemp("access")
    htpasswd = write_htpasswd(base / "htpasswd", PASSWORDS)
    (base / "policy.yaml").write_text(POLICY)
    proc, port = start_registry(base / "root", base, "--htpasswd", str(htpasswd),
                                "--access-policy", str(base / "policy.yaml"))
    try:
        url = f"http://127.0.0.1:{port}"
        with Oci(url, auth=("root", PASSWORDS["root"])) as admin:
            demo, _ = admin.image("demo/app", "v1", layer=b"demo layer")
            private, _ = admin.image("private/secret", "v1", layer=b"private layer")
            admin.image("team/tool", "v1", layer=b"team layer")
        yield Guarded(url, f"127.0.0.1:{port}", base / "root", demo, sha256(b"demo layer"),
                      private, sha256(b"private layer"))
    finally:
        proc.stop()


def _detail(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["detail"])


def _assert_unauthorized(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert error_code(r) == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
    for word in words:
        assert word in _detail(r), (word, _detail(r))


def _assert_denied(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert error_code(r) == "DENIED"
    for word in words:
        assert word in _detail(r), (word, _detail(r))


def _state(g: Guarded) -> dict[str, object]:
    """What an attack must not change: tags, manifests and blob links, seen by the admin."""
    with g.client("root") as admin:
        out: dict[str, object] = {}
        for repo in ("demo/app", "private/secret", "team/tool"):
            out[repo] = admin.get(f"/v2/{repo}/tags/list").json()["tags"]
            out[f"{repo}:v1"] = admin.get(f"/v2/{repo}/manifests/v1").headers.get("Docker-Content-Digest")
        for repo, digest in (("demo/app", g.demo_layer), ("private/secret", g.private_layer),
                             ("team/tool", g.demo_layer), ("team/tool", g.private_layer)):
            out[f"{repo}@{digest}"] = admin.head(f"/v2/{repo}/blobs/{digest}").status_code
        out["catalog"] = admin.get("/v2/_catalog").json()["repositories"]
        return out


def _other_manifest() -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": sha256(b"x"), "size": 1}, "layers": []}).encode()


def test_anonymous_pulls_only_where_the_policy_allows(guarded: Guarded) -> None:
    before = _state(guarded)
    with guarded.client() as anon:
        r = anon.get("/v2/demo/app/manifests/v1")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == guarded.demo
        assert anon.get(f"/v2/demo/app/blobs/{guarded.demo_layer}").content == b"demo layer"
        assert anon.get("/v2/demo/app/tags/list").json()["tags"] == ["v1"]
        _assert_unauthorized(anon.get("/v2/private/secret/manifests/v1"), "pull", "private/secret")
        _assert_unauthorized(anon.get(f"/v2/private/secret/blobs/{guarded.private_layer}"), "pull", "private/secret")
        _assert_unauthorized(anon.get("/v2/private/secret/tags/list"), "pull")
        _assert_unauthorized(anon.get(f"/v2/private/secret/referrers/{guarded.private}"), "pull")
        _assert_unauthorized(anon.get("/v2/_driftless/components/private/secret/v1"), "pull")
        # writes need a credential, even where anonymous callers may pull
        _assert_unauthorized(anon.post("/v2/demo/app/blobs/uploads/"), "push", "demo/app")
        _assert_unauthorized(anon.post("/v2/demo/app/blobs/uploads/", params={"digest": sha256(b"evil")},
                                       content=b"evil"), "push")
        _assert_unauthorized(anon.put("/v2/demo/app/manifests/v1", content=_other_manifest(),
                                      headers={"Content-Type": OCI_MANIFEST}), "push", "demo/app")
        _assert_unauthorized(anon.delete("/v2/demo/app/manifests/v1"), "delete", "demo/app")
        _assert_unauthorized(anon.delete(f"/v2/demo/app/manifests/{guarded.demo}"), "delete")
        _assert_unauthorized(anon.delete(f"/v2/demo/app/blobs/{guarded.demo_layer}"), "delete")
        # the registry-wide endpoints ask for credentials, so clients learn to send theirs
        _assert_unauthorized(anon.get("/v2/"))
        _assert_unauthorized(anon.get("/v2/_catalog"))
        _assert_unauthorized(anon.get("/metrics"))
    assert _state(guarded) == before
    assert sha256(b"evil") not in str(list(guarded.root.rglob("*")))


def test_known_users_are_denied_what_the_policy_does_not_give(guarded: Guarded) -> None:
    before = _state(guarded)
    with guarded.client("bob") as bob:
        assert bob.get("/v2/").status_code == 200
        assert bob.get("/v2/demo/app/manifests/v1").status_code == 200  # defaultPolicy
        assert bob.get("/v2/team/tool/manifests/v1").status_code == 403  # push only there
        _assert_denied(bob.get("/v2/private/secret/manifests/v1"), "'bob'", "pull", "private/secret")
        assert bob.head(f"/v2/private/secret/blobs/{guarded.private_layer}").status_code == 403
        _assert_denied(bob.get("/v2/private/secret/tags/list"), "pull", "private/secret")
        # every write on demo/app: blob upload (both forms), manifest PUT, tag add, deletes
        _assert_denied(bob.post("/v2/demo/app/blobs/uploads/"), "'bob'", "push", "demo/app")
        _assert_denied(bob.post("/v2/demo/app/blobs/uploads/", params={"digest": sha256(b"evil")}, content=b"evil"),
                       "push")
        body = _other_manifest()
        _assert_denied(bob.put("/v2/demo/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}),
                       "push", "demo/app")
        _assert_denied(bob.put(f"/v2/demo/app/manifests/{guarded.demo}", params={"tag": "evil"},
                               content=b"{}", headers={"Content-Type": OCI_MANIFEST}), "push")
        _assert_denied(bob.delete("/v2/demo/app/manifests/v1"), "'bob'", "delete", "demo/app")
        _assert_denied(bob.delete(f"/v2/demo/app/manifests/{guarded.demo}"), "delete")
        _assert_denied(bob.delete(f"/v2/demo/app/blobs/{guarded.demo_layer}"), "delete")
    with guarded.client("carol") as carol:  # pull and push on team/, but no delete
        _assert_denied(carol.delete("/v2/team/tool/manifests/v1"), "'carol'", "delete", "team/tool")
    # a session alice opened cannot be written, finished or cancelled by bob
    with guarded.client("alice") as alice, guarded.client("bob") as bob:
        r = alice.post("/v2/demo/app/blobs/uploads/")
        assert r.status_code == 202
        location = r.headers["Location"]
        _assert_denied(bob.patch(location, content=b"evil", headers={"Content-Range": "0-3"}), "push")
        _assert_denied(bob.put(location, params={"digest": sha256(b"evil")}, content=b"evil"), "push")
        _assert_denied(bob.delete(location), "push")
        status = alice.get(location)
        assert status.status_code == 204 and status.headers["Range"] == "0-0"
        assert alice.delete(location).status_code == 204
    assert _state(guarded) == before


def test_wrong_credentials_are_401_even_where_anonymous_may_pull(guarded: Guarded) -> None:
    with guarded.client("alice", "not-her-password") as liar:
        _assert_unauthorized(liar.get("/v2/demo/app/manifests/v1"), "wrong user name or password")
    with guarded.client("mallory", "whatever") as stranger:
        _assert_unauthorized(stranger.get("/v2/demo/app/manifests/v1"))
    with httpx.Client(base_url=guarded.url) as raw:
        _assert_unauthorized(raw.get("/v2/demo/app/manifests/v1", headers={"Authorization": "Basic !!!"}))
        _assert_unauthorized(raw.get("/v2/demo/app/manifests/v1", headers={"Authorization": "Bearer abc"}))


def test_allowed_users_push_tag_and_delete(guarded: Guarded) -> None:
    with guarded.client("alice") as alice:
        digest, _ = alice.image("demo/alice", "1.0", layer=b"alice layer")
        r = alice.put(f"/v2/demo/alice/manifests/{digest}", params={"tag": "stable"},
                      content=alice.get(f"/v2/demo/alice/manifests/{digest}").content,
                      headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        assert alice.get("/v2/demo/alice/tags/list").json()["tags"] == ["1.0", "stable"]
        assert alice.delete("/v2/demo/alice/manifests/stable").status_code == 202
        assert alice.delete(f"/v2/demo/alice/manifests/{digest}").status_code == 202
        # push but no delete on private/
        alice.image("private/alice", "1.0", layer=b"alice private")
        _assert_denied(alice.delete("/v2/private/alice/manifests/1.0"), "'alice'", "delete", "private/alice")
        assert alice.get("/v2/private/alice/tags/list").json()["tags"] == ["1.0"]
    with guarded.client("carol") as carol:  # pull + push on team/
        carol.image("team/carol", "1.0", layer=b"carol layer")
    with guarded.client("root") as root:  # the admin may do everything, anywhere
        assert root.delete("/v2/private/alice/manifests/1.0").status_code == 202
        assert root.delete("/v2/team/carol/manifests/1.0").status_code == 202


def test_catalog_lists_what_the_caller_may_pull(guarded: Guarded) -> None:
    def catalog(user: str) -> list[str]:
        with guarded.client(user) as c:
            r = c.get("/v2/_catalog")
            assert r.status_code == 200, r.text
            return [x for x in r.json()["repositories"] if x in ("demo/app", "private/secret", "team/tool")]

    assert catalog("root") == ["demo/app", "private/secret", "team/tool"]
    assert catalog("alice") == ["demo/app", "private/secret"]
    assert catalog("bob") == ["demo/app"]  # push only on team/
    assert catalog("carol") == ["demo/app", "team/tool"]
    with guarded.client("bob") as bob:  # pagination works on the filtered list
        r = bob.get("/v2/_catalog", params={"n": 1})
        assert r.json()["repositories"] == ["demo/alice"] or r.json()["repositories"] == ["demo/app"]
        assert "private" not in r.headers.get("Link", "")


def test_mount_needs_pull_on_the_source_and_push_on_the_target(guarded: Guarded) -> None:
    before = _state(guarded)
    with guarded.client("carol") as carol:
        # pull is missing on private/secret: denied, nothing linked
        r = carol.post("/v2/team/tool/blobs/uploads/",
                       params={"mount": guarded.private_layer, "from": "private/secret"})
        _assert_denied(r, "'carol'", "pull", "private/secret", "mount")
        # without from=, the registry-wide lookup only sees repositories carol may pull: a new session
        r = carol.post("/v2/team/tool/blobs/uploads/", params={"mount": guarded.private_layer})
        assert r.status_code == 202, r.text
        carol.delete(r.headers["Location"])
    with guarded.client("bob") as bob:  # bob may push to team/ but not pull private/
        _assert_denied(bob.post("/v2/team/tool/blobs/uploads/",
                                params={"mount": guarded.private_layer, "from": "private/secret"}), "pull")
    with guarded.client("alice") as alice:  # alice may pull private/ but not push to team/
        _assert_denied(alice.post("/v2/team/tool/blobs/uploads/",
                                  params={"mount": guarded.private_layer, "from": "private/secret"}),
                       "'alice'", "push", "team/tool")
    assert _state(guarded) == before
    with guarded.client("carol") as carol:  # allowed: pull demo/app (defaultPolicy), push team/tool
        r = carol.post("/v2/team/tool/blobs/uploads/", params={"mount": guarded.demo_layer, "from": "demo/app"})
        assert r.status_code == 201, r.text
        assert carol.get(f"/v2/team/tool/blobs/{guarded.demo_layer}").content == b"demo layer"
        assert carol.delete(f"/v2/team/tool/blobs/{guarded.demo_layer}").status_code == 403  # no delete
    with guarded.client("root") as root:
        assert root.delete(f"/v2/team/tool/blobs/{guarded.demo_layer}").status_code == 202


def test_skopeo_with_an_access_policy(guarded: Guarded, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    r = skopeo(tmp_path, "copy", "--src-tls-verify=false", f"docker://{guarded.host}/demo/app:v1",
               f"oci:{layout}:v1")  # anonymous: demo/ is open for pulls
    assert r.returncode == 0, r.stderr
    dest = f"docker://{guarded.host}/demo/skopeo:1.0"
    r = skopeo(tmp_path, "copy", "--dest-tls-verify=false", "--dest-creds", f"bob:{PASSWORDS['bob']}",
               f"oci:{layout}:v1", dest)
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    r = skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", dest)
    assert r.returncode != 0 and ("unauthorized" in r.stderr.lower() or "authentication" in r.stderr.lower()), r.stderr
    with guarded.client("root") as root:
        assert root.get("/v2/demo/skopeo/tags/list").status_code == 404  # nothing arrived
    r = skopeo(tmp_path, "copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{PASSWORDS['alice']}",
               f"oci:{layout}:v1", dest)
    assert r.returncode == 0, r.stderr
    r = skopeo(tmp_path, "inspect", "--tls-verify=false", "--creds", f"bob:{PASSWORDS['bob']}",
               f"docker://{guarded.host}/private/secret:v1")
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    r = skopeo(tmp_path, "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORDS['alice']}",
               f"docker://{guarded.host}/private/secret:v1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == guarded.private


def test_oras_with_an_access_policy(guarded: Guarded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wasm = tmp_path / "app.wasm"
    wasm.write_bytes(b"\0asm\x01\0\0\0")  # an empty core module
    monkeypatch.chdir(tmp_path)  # oras-py names layers after paths relative to the working directory

    def login(user: str) -> oras.client.OrasClient:
        c = oras.client.OrasClient(hostname=guarded.host, insecure=True, auth_backend="basic")
        c.login(username=user, password=PASSWORDS[user], hostname=guarded.host, tls_verify=False)
        return c

    with pytest.raises(Exception):  # noqa: B017 - oras-py raises ValueError or requests' HTTPError
        login("bob").push(target=f"{guarded.host}/private/oras:1.0", files=["app.wasm:application/wasm"], quiet=True)
    with guarded.client("root") as root:
        assert root.get("/v2/private/oras/tags/list").status_code == 404
    login("alice").push(target=f"{guarded.host}/private/oras:1.0", files=["app.wasm:application/wasm"], quiet=True)
    assert login("alice").get_tags(f"{guarded.host}/private/oras") == ["1.0"]


# --- password checks: off the loop, cached, rate-limited ---------------------------------------------


def test_anonymous_requests_are_not_blocked_by_password_checks(tmp_path: Path) -> None:
    # a realistic bcrypt cost (~0.1-1 s per check here): on the event loop, four clients sending wrong
    # passwords would hold every other request for about that long
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "right"}, rounds=11)
    proc, port = start_registry(tmp_path / "root", tmp_path, "--htpasswd", str(htpasswd), "--anonymous-pull",
                                "--auth-failure-limit", "0")
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    attempts: list[int] = []

    def hammer(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                # a write: it needs the password checked in every mode, also before this fix
                attempts.append(c.post("/v2/app/blobs/uploads/", auth=("alice", f"wrong-{i}-{len(attempts)}")).status_code)

    try:
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(attempts) >= 2, timeout=30, what="the first wrong passwords to be checked")
        latencies = []
        with httpx.Client(base_url=url, timeout=30) as anon:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert anon.get("/v2/").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        proc.stop()
    assert set(attempts) == {401} and len(attempts) >= 4
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.1, f"p99 of anonymous /v2/ was {p99 * 1000:.0f} ms (median {statistics.median(latencies) * 1000:.1f} ms)"


def test_failed_logins_are_rate_limited_and_good_ones_cached(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "right", "bob": "bobs"})
    policy = tmp_path / "policy.json"  # the JSON form of a policy
    policy.write_text(json.dumps({"repositories": {"**": {"defaultPolicy": ["pull", "push"]}}}))
    proc, port = start_registry(tmp_path / "root", tmp_path, "--htpasswd", str(htpasswd), "--access-policy",
                                str(policy), "--auth-failure-limit", "3")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url) as c:
            assert c.get("/v2/", auth=("alice", "right")).status_code == 200  # remembered from now on
            for _ in range(3):
                _assert_unauthorized(c.get("/v2/", auth=("alice", "wrong")))
            r = c.get("/v2/", auth=("alice", "wrong"))
            assert r.status_code == 429 and error_code(r) == "TOOMANYREQUESTS", r.text
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert "alice" in _detail(r)
            # the attacker is stopped before bcrypt; the logged-in client goes on, other users too
            assert c.get("/v2/", auth=("alice", "right")).status_code == 200
            assert c.get("/v2/", auth=("bob", "bobs")).status_code == 200
            # a changed htpasswd file forgets remembered logins (it is looked at once a second)
            write_htpasswd(htpasswd, {"alice": "right", "bob": "changed"})
            wait_until(lambda: c.get("/v2/", auth=("bob", "bobs")).status_code == 401, timeout=10,
                       what="bob's remembered old password to stop working")
            assert c.get("/v2/", auth=("bob", "changed")).status_code == 200
    finally:
        proc.stop()


def test_policy_without_users_and_read_only_interplay(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('repositories:\n  "**": {anonymousPolicy: [pull]}\n  "scratch/**": {anonymousPolicy: [pull, push]}\n')
    proc, port = start_registry(tmp_path / "root", tmp_path, "--access-policy", str(policy))
    try:
        with Oci(f"http://127.0.0.1:{port}") as anon:
            assert anon.get("/v2/").status_code == 200
            anon.image("scratch/app", "v1")
            # no users exist: no credential could help, so it is 403, not 401
            _assert_denied(anon.post("/v2/other/app/blobs/uploads/"), "anonymous", "push", "other/app")
            _assert_denied(anon.delete("/v2/scratch/app/manifests/v1"), "delete", "scratch/app")
            assert anon.get("/v2/scratch/app/tags/list").json()["tags"] == ["v1"]
            assert anon.get("/v2/_catalog").json()["repositories"] == ["scratch/app"]
    finally:
        proc.stop()


@pytest.mark.parametrize("policy, extra, needle", [
    ('repositories: {"**": {policies: [{users: [zed], actions: [pull]}]}}', [], "'zed', not in the htpasswd"),
    ('repositories: {"**": {defaultPolicy: [read]}}', [], "unknown action 'read'"),
    ('repositories: {"**": {polices: []}}', [], "unknown key"),
    ('repositories: {"Bad Glob": {}}', [], "repository glob"),
    ('repositories: {"**": {policies: [{users: [anonymous], actions: [pull]}]}}', [], "anonymousPolicy"),
    ("admins: [alice]\nrepositories: {}", ["--anonymous-pull"], "do not go together"),
    ("repositories: [", [], "not valid YAML"),
])
def test_policy_usage_errors(tmp_path: Path, policy: str, extra: list[str], needle: str) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "pw"})
    (tmp_path / "policy.yaml").write_text(policy)
    r = subprocess.run(
        [sys.executable, "-m", "driftless", "registry", "serve",
         "--root", str(tmp_path / "root"), "--listen", "127.0.0.1:0", "--htpasswd", str(htpasswd),
         "--access-policy", str(tmp_path / "policy.yaml"), *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_policy_file_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "serve", "--root", str(tmp_path), "--access-policy", str(tmp_path / "absent.yaml")]) == 2
    assert "--access-policy" in capsys.readouterr().err
    assert main(["registry", "serve", "--root", str(tmp_path), "--auth-failure-limit", "-1"]) == 2


def test_the_documented_policy_means_what_the_docs_say() -> None:
    import yaml

    from registry.access import AccessPolicy

    docs = (Path(__file__).resolve().parents[2] / "docs" / "registry.md").read_text()
    section = docs.split("## Access control", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n")[1]
    policy = AccessPolicy.parse(yaml.safe_load(block.split("```", 1)[0]), source="docs")
    assert policy.allows("bob", "demo/app", "pull") and not policy.allows("bob", "demo/app", "push")
    assert not policy.allows("bob", "private/x", "pull") and policy.allows("bob", "team/x", "push")
    assert not policy.allows("bob", "team/x", "pull")
    assert policy.rule_for("demo").pattern == "**" and policy.rule_for("demo/a/b").pattern == "demo/**"
    assert policy.allows(None, "demo/a/b", "pull") and not policy.allows(None, "other/app", "pull")
    assert policy.allows("alice", "demo/app", "delete") and not policy.allows("alice", "private/x", "delete")
    assert all(policy.allows("root", "anything/at/all", a) for a in ("pull", "push", "delete"))
    snippet = section.split("The same as JSON: `", 1)[1].split("` (a `.json`", 1)[0]
    as_json = AccessPolicy.parse(json.loads(snippet.replace("\n", " ")), source="docs")
    assert as_json.allows(None, "demo/app", "pull") and as_json.allows("alice", "demo/app", "delete")
