"""The dashboard (docs/dashboard.md) in a real browser: headless Chromium driven by Playwright against a
real platform (registry, Git repository with its hook, reconciler, three hosts labelled like
`driftless up`'s) serving the example manifests. The page loads without console errors, shows the
apps and their health side by side, follows a `git push` without a reload, shows a rejected
commit with file:line, and promotes, approves and rolls back through its buttons: the commits land in
Git, authored (and approved) by the credential's user; a viewer sees no button and gets 403 from the
API. Screenshots of the run land in docs/screenshots/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api  # the test extras; hack/setup.sh installs Debian's chromium

from tests.support.platform import ADMIN, LocalPlatform, local_platform, user, with_custom_section

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("DRIFTLESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# where the screenshots go: DRIFTLESS_SCREENSHOTS=docs/screenshots to refresh the documentation's
SCREENSHOTS_ENV = os.environ.get("DRIFTLESS_SCREENSHOTS")
HOSTS = {"aws-us-east-1": {"cloud": "aws", "region": "us-east-1"},
         "gcp-europe-west1": {"cloud": "gcp", "region": "europe-west1"},
         "edge-1": {"tier": "edge"}}  # fmt: skip



@pytest.fixture(scope="module", autouse=True)
def _chromium() -> None:
    """A browser test without a browser fails: it never passes silently."""
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run hack/setup.sh (it installs Debian's chromium)"


def _example_tree() -> dict[str, str | None]:
    """The repository's example manifests, without the componentize-py app (its build is slow)."""
    base = ROOT / "manifests"
    return {str(p.relative_to(base)): p.read_text() for p in sorted(base.glob("*/**/*.yaml"))
            if p.name != "hello-py.yaml"}


def _last_commit(p: LocalPlatform) -> dict[str, str]:
    """The branch head of the platform's Git repository (what a promotion or rollback pushed)."""
    out = subprocess.run(["git", "--git-dir", str(p.git.bare), "log", "-1", "--format=%H%x00%s%x00%an%x00%b", "main"],
                         check=True, capture_output=True, text=True).stdout
    sha, subject, author, body = out.split("\x00")
    return {"sha": sha, "subject": subject, "author": author, "body": body}


def _screenshots(tmp_path: Path) -> Path:
    out = Path(SCREENSHOTS_ENV) if SCREENSHOTS_ENV else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except (httpx.HTTPError, KeyError):
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    p = local_platform(tmp_path, hosts=HOSTS)
    wasm = {n: (ROOT / "examples" / "components" / f"{n}.wasm").read_bytes() for n in ("hello", "greeter", "frontend")}
    try:
        p.up(tree=_example_tree(), components={f"demo/{n}:1.0.0": b for n, b in wasm.items()},
             message="Seed the example manifests")
        for env in ("dev", "staging", "prod"):
            _wait(f"{env}/hello healthy", lambda env=env: p.reconciler.app(env, "hello")["health"] == "Healthy")
        yield p
    finally:
        p.stop()


def test_dashboard_shows_the_platform_and_follows_a_push(platform: LocalPlatform, tmp_path: Path) -> None:
    p = platform
    shots = _screenshots(tmp_path)
    url = p.reconciler.url
    token = p.read_headers.get("Authorization", "")[7:]  # a credential when reads need one
    page_html = httpx.get(f"{url}/", timeout=5)
    assert page_html.status_code == 200 and "text/html" in page_html.headers["Content-Type"]
    assert "http://" not in page_html.text and "https://" not in page_html.text  # no CDN: our /static only
    _check_stream_and_static(p, token)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            if token:
                context.add_init_script(f"localStorage.setItem('driftless.readToken', {token!r});")
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")  # a dry run's 409 lists the
                    if m.type == "error" and "status of 409" not in m.text else None)  # gates that wait: shown
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}")
                    if "/api/v1/stream" not in r.url else None)  # the stream is cut when the page closes

            page.goto(f"{url}/")
            page.wait_for_selector("#live.on", timeout=10_000)
            for env in ("dev", "staging", "prod"):
                page.wait_for_selector(f'.env[data-env="{env}"] article[data-app="hello"][data-health="Healthy"]',
                                       timeout=20_000)
            # side by side in promotion order (staging promotes from dev, prod from staging)
            assert page.locator(".env h3").all_inner_texts()[0].startswith("dev")
            assert [t.split()[0] for t in page.locator(".env h3").all_inner_texts()] == ["dev", "staging", "prod"]
            assert "promoted from staging" in page.locator('.env[data-env="prod"] .promo').inner_text()
            digest = p.registry.digest("demo/hello:1.0.0")
            assert digest is not None
            assert digest[7:19] in page.locator('.env[data-env="dev"] article[data-app="hello"]').inner_text()
            # the conditions of a healthy app say nothing new: not shown (they are when something is wrong, below)
            assert page.locator('.env[data-env="dev"] article[data-app="hello"] .conds').count() == 0
            # instances grouped by host labels, with their status
            groups = page.locator("#instances .group h3").all_inner_texts()
            assert groups == ["cloud=aws · region=us-east-1", "cloud=gcp · region=europe-west1", "tier=edge"]
            page.wait_for_selector('#instances tr[data-instance^="dev/hello/web/"] .b-Running')
            page.wait_for_selector("#history .commit")
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            # one screen of instances, not three: about 3,200 px at 1400 wide before, well under 2,000 now
            height = page.evaluate("document.documentElement.scrollHeight")
            assert height < 2000, f"the page is {height} px high at 1440 wide"

            # a push shows without a reload: a new digest and a new greeting in dev
            page.evaluate("window.__notReloaded = true")
            new_digest = p.registry.push("demo/hello:1.1.0", with_custom_section(
                (ROOT / "examples" / "components" / "hello.wasm").read_bytes(), b"1.1.0"))
            hello = _example_tree()["dev/apps/hello.yaml"]
            assert hello is not None
            changed = hello.replace("demo/hello:1.0.0", "demo/hello:1.1.0").replace("Hello from dev", "Bonjour from dev")
            pushed_at = time.monotonic()
            p.git.push({"dev/apps/hello.yaml": changed},
                        "dev: hello 1.1.0, in French\n\nThe greeting speaks French now.\n\nReviewed-By: alice")
            dev_hello = page.locator('.env[data-env="dev"] article[data-app="hello"]')
            sync_api.expect(dev_hello).to_contain_text(new_digest[7:19], timeout=10_000)
            seen_digest = time.monotonic() - pushed_at
            sync_api.expect(page.locator('#instances tr[data-instance^="dev/hello/web/"]').first).to_contain_text(
                "GREETING=Bonjour from dev", timeout=30_000)
            seen_greeting = time.monotonic() - pushed_at
            sync_api.expect(page.locator("#history .commit").first).to_contain_text("Reviewed-By", timeout=10_000)
            assert page.evaluate("window.__notReloaded") is True
            assert seen_digest < 5, f"the new digest showed {seen_digest:.1f} s after the push"
            print(f"after git push: digest on the page in {seen_digest:.2f} s, "
                  f"greeting served and shown in {seen_greeting:.2f} s")
            page.wait_for_selector('.env[data-env="dev"] article[data-app="hello"][data-health="Healthy"]',
                                   timeout=30_000)
            page.screenshot(path=str(shots / "dashboard-after-push.png"), full_page=True)

            # promote dev -> staging with the button (an admin's page): every gate passes, the commit lands in Git
            assert ADMIN in page.locator("#who").inner_text()
            staging_hello = page.locator('.env[data-env="staging"] article[data-app="hello"]')
            staging_hello.locator("button.check").click()
            promote = staging_hello.locator("button.promote")
            sync_api.expect(promote).to_be_enabled(timeout=30_000)
            assert staging_hello.locator(".gate").count() >= 4
            assert staging_hello.locator('.gate:not([data-state="pass"])').count() == 0
            assert new_digest[7:19] in staging_hello.locator(".gates").inner_text()  # what would change
            promote.click()
            committed = staging_hello.locator(".committed code.commit")
            sync_api.expect(committed).to_be_visible(timeout=30_000)
            head = _last_commit(p)
            assert committed.get_attribute("title") == head["sha"]
            assert head["subject"] == "promote(hello): dev -> staging" and head["author"] == ADMIN, head
            sync_api.expect(staging_hello.locator(".comps")).to_contain_text(new_digest[7:19], timeout=15_000)
            # prod's gates: staging's new digest soaks (30 s, with the time left) and prod wants an approval
            page.wait_for_selector('.env[data-env="staging"] article[data-app="hello"][data-health="Healthy"]',
                                   timeout=30_000)
            prod_hello = page.locator('.env[data-env="prod"] article[data-app="hello"]')
            prod_hello.locator("button.check").click()
            sync_api.expect(prod_hello.locator('.gate[data-gate="min-soak"][data-state="wait"]')).to_contain_text(
                "s left", timeout=30_000)
            assert prod_hello.locator('.gate[data-gate="approval"][data-state="wait"]').count() == 1
            assert prod_hello.locator("button.promote.approve").is_disabled()
            page.locator("#envs").screenshot(path=str(shots / "dashboard-gates.png"))

            # a rejected commit: file:line and the message, the last good revision still applied
            bad = changed.replace("maxConcurrency: 16", "maxConcurrency: lots")
            assert bad != changed
            p.git.push({"dev/apps/hello.yaml": bad}, "dev: a broken limit")
            where = page.locator("#rejected .where").first
            sync_api.expect(where).to_contain_text("dev/apps/hello.yaml:", timeout=10_000)
            line = next(i for i, text in enumerate(bad.splitlines(), 1) if "maxConcurrency" in text)
            assert f"hello.yaml:{line}" in where.inner_text()
            assert "lots" in page.locator("#rejected").inner_text() or "integer" in page.locator("#rejected").inner_text()
            assert page.locator("#rejected").is_visible()
            assert new_digest[7:19] in dev_hello.inner_text()  # still what runs
            # something is wrong now: the conditions show, Stalled by the rejected revision
            sync_api.expect(dev_hello.locator(".conds")).to_contain_text("Stalled=True", timeout=10_000)
            page.locator("#rejected").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "dashboard-rejected.png"))
            assert page.evaluate("window.__notReloaded") is True
            assert problems == [], "\n".join(problems)
        finally:
            browser.close()


def _check_stream_and_static(p: LocalPlatform, token: str) -> None:
    """The stream takes the read credential as ?access_token= (EventSource sends no headers); assets are
    gzipped and revalidated by ETag; nothing outside static/ is served."""
    base = p.reconciler.url
    url = f"{base}/api/v1/stream"
    if token and httpx.get(f"{base}/api/v1/environments", timeout=5).status_code == 401:
        assert httpx.get(url, timeout=5).status_code == 401
    if token:
        url += f"?access_token={token}"
    with httpx.stream("GET", url, timeout=5) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert next(r.iter_lines()) == "event: hello"
    static = httpx.get(f"{base}/static/app.js", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert static.status_code == 200 and static.headers["Content-Encoding"] == "gzip"
    again = httpx.get(f"{base}/static/app.js", headers={"If-None-Match": static.headers["ETag"]}, timeout=5)
    assert again.status_code == 304
    assert httpx.get(f"{base}/static/nothing.js", timeout=5).status_code == 404


def test_dashboard_asks_once_for_a_token_and_promotes_with_an_approval(tmp_path: Path) -> None:
    """Reads closed: the page asks for a token once. A viewer's page has no button (and the API refuses
    them 403); an admin's approves and promotes to prod once the soak time is over (counted down on the
    page), then rolls prod back from the history: each a commit in Git by that user."""
    viewer = "viewer-" + secrets.token_hex(12)
    p = local_platform(tmp_path, hosts=HOSTS, open_reads=False, users=[user("vera", viewer, "viewer")])
    tree = _example_tree()
    prod_env = tree["prod/environment.yaml"]
    assert prod_env is not None and "minSoak: 30s" in prod_env
    tree["prod/environment.yaml"] = prod_env.replace("minSoak: 30s", "minSoak: 3s")  # a shorter wait to watch
    hello_wasm = (ROOT / "examples" / "components" / "hello.wasm").read_bytes()
    try:
        digests = p.up(tree=tree, components={
            f"demo/{n}:1.0.0": (ROOT / "examples" / "components" / f"{n}.wasm").read_bytes()
            for n in ("hello", "greeter", "frontend")})
        base = p.reconciler.url
        assert httpx.get(f"{base}/api/v1/environments", timeout=5).status_code == 401
        assert httpx.get(f"{base}/api/v1/stream", timeout=5).status_code == 401
        assert httpx.get(f"{base}/", timeout=5).status_code == 200  # the page holds no data
        refused = httpx.post(f"{base}/api/v1/promote", json={"app": "hello", "from": "staging", "to": "prod"},
                             headers={"Authorization": f"Bearer {viewer}"}, timeout=10)
        assert refused.status_code == 403, refused.text  # what a viewer's click would get
        seed = _last_commit(p)["sha"]
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                problems: list[str] = []
                expected = ("status of 401", "status of 403", "status of 409")  # what the page is told, and shows
                page.on("console", lambda m: problems.append(m.text)
                        if m.type == "error" and not any(e in m.text for e in expected) else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(f"{base}/")
                page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
                assert "signed out" in page.locator("#live").inner_text()
                # words for a person in a browser, not the API's advice to API clients
                prompt = page.locator("#token-message").inner_text()
                assert "sign-in link" in prompt and "Authorization" not in prompt and "--token-file" not in prompt

                # a viewer reads everything and sees no button that changes something
                page.fill("#token-input", viewer)
                page.click("#token-form button[type=submit]")
                page.wait_for_selector("#live.on", timeout=10_000)
                prod_hello = page.locator('.env[data-env="prod"] article[data-app="hello"]')
                sync_api.expect(prod_hello.locator(".gates")).to_contain_text("vera may not promote", timeout=20_000)
                page.wait_for_selector("#history .commit")
                assert "vera (viewer)" in page.locator("#who").inner_text()
                assert page.locator(".gates button, button.promote, button.rollback").count() == 0

                # an admin's token, asked once (kept across a reload)
                page.click("#token-toggle")
                page.fill("#token-input", p.admin_token())
                page.click("#token-form button[type=submit]")
                sync_api.expect(page.locator("#who")).to_contain_text(f"{ADMIN} (admin)", timeout=10_000)
                page.reload()
                page.wait_for_selector("#live.on", timeout=10_000)
                assert page.locator("#token-form").is_hidden()
                sync_api.expect(page.locator("#who")).to_contain_text(ADMIN, timeout=10_000)

                # a new digest in staging; prod's gates wait for its soak, then approve & promote commits
                new_digest = p.registry.push("demo/hello:1.1.0", with_custom_section(hello_wasm, b"1.1.0"))
                staging = tree["staging/apps/hello.yaml"]
                assert staging is not None and "demo/hello:1.0.0" in staging
                p.git.push({"staging/apps/hello.yaml": staging.replace("demo/hello:1.0.0", "demo/hello:1.1.0")},
                           "staging: hello 1.1.0")
                _wait("staging/hello healthy on the new digest", lambda: (
                    (s := p.reconciler.app("staging", "hello"))["health"] == "Healthy"
                    and s["components"][0]["digest"] == new_digest))
                prod_hello.locator("button.check").click()
                approve = prod_hello.locator("button.promote.approve")
                sync_api.expect(approve).to_be_visible(timeout=30_000)
                assert prod_hello.locator('.gate[data-gate="approval"][data-state="wait"]').count() == 1
                sync_api.expect(approve).to_be_enabled(timeout=20_000)  # checked again once the soak is over
                assert approve.inner_text() == f"approve & promote as {ADMIN}"
                approve.click()
                committed = prod_hello.locator(".committed code.commit")
                sync_api.expect(committed).to_be_visible(timeout=30_000)
                head = _last_commit(p)
                assert committed.get_attribute("title") == head["sha"]
                assert head["subject"] == "promote(hello): staging -> prod" and head["author"] == ADMIN, head
                assert f"Approved-By: {ADMIN}" in head["body"], head["body"]
                sync_api.expect(prod_hello.locator(".comps")).to_contain_text(new_digest[7:19], timeout=15_000)
                page.locator('.env[data-env="prod"]').screenshot(path=str(_screenshots(tmp_path) / "dashboard-approved.png"))

                _sign_in_link(browser, base, p.admin_token())

                # roll prod's hello back to the seed from the history: a new commit by the admin
                entry = page.locator(f'#history li.commit[data-env="prod"][data-revision="{seed}"]')
                entry.locator('.hist-app[data-app="hello"] button.rollback').click()
                entry.locator("button.do-rollback").click()
                sync_api.expect(entry.locator(".rolled-back")).to_be_visible(timeout=30_000)
                head = _last_commit(p)
                assert head["subject"] == f"rollback(hello): prod to {seed[:12]}" and head["author"] == ADMIN, head
                old = digests["demo/hello:1.0.0"]
                sync_api.expect(prod_hello.locator(".comps")).to_contain_text(old[7:19], timeout=15_000)
                assert problems == [], "\n".join(problems)
            finally:
                browser.close()
    finally:
        p.stop()


def _sign_in_link(browser: sync_api.Browser, base: str, token: str) -> None:
    """The link `driftless up` prints signs a fresh browser in: the token travels in the fragment (never
    sent to the server), the page keeps it in localStorage and removes it from the address bar and the
    history; a wrong token in a link is refused in words for a person."""
    from driftless.endpoints import sign_in_link

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url))
        page.goto(sign_in_link(base, token))
        sync_api.expect(page.locator("#who")).to_contain_text(f"{ADMIN} (admin)", timeout=10_000)
        page.wait_for_selector("#live.on", timeout=10_000)
        assert page.url == f"{base}/", page.url  # gone from the address bar
        assert page.evaluate("location.hash") == ""
        assert page.evaluate("localStorage.getItem('driftless.readToken')") == token
        assert not any(token in url for url in sent if "/api/v1/stream" not in url), sent  # only the stream's ?access_token
        page.go_back()  # the history holds no entry with the token either
        assert token not in page.url
        page.goto(sign_in_link(base, "not-" + token))
        page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
        assert "not accepted" in page.locator("#token-message").inner_text()
        assert "#token" not in page.url
    finally:
        context.close()
