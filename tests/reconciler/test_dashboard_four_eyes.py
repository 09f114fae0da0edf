"""Four eyes on the dashboard, in a real browser (headless Chromium, Playwright) against a real platform on
free ports: where prod wants an approval by someone other than the promoter, the admin's page records the
admin's own approval ahead (listed on the app) but keeps the promote button disabled; once another user
approved, the button commits, with both as Approved-By: trailers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
from playwright import sync_api

from tests.drift.test_promote_review import math
from tests.support.platform import ADMIN, application, environment, local_platform, user, with_custom_section
from tests.support.procs import wait_until

CHROMIUM = os.environ.get("DRIFTLESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOB = "bob-token"


def calc(tag: str) -> str:
    return application("calc", [{"name": "math", "image": f"demo/math:{tag}"}])


def test_the_dashboard_waits_for_another_approver(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run hack/setup.sh"
    prod = environment("prod").rstrip(" ") + ("          promotion:\n            from: staging\n"
                                               "            requireApproval: {approvers: 1, distinctFromPromoter: true}\n")
    p = local_platform(tmp_path, hosts={"h1": {"cloud": "aws"}}, users=[user("bob", BOB, "operator")])
    try:
        p.up(tree={"staging/environment.yaml": environment("staging", prefix="/staging"),
                   "staging/apps/calc.yaml": calc("1.0.0"),
                   "prod/environment.yaml": prod, "prod/apps/calc.yaml": calc("1.0.0")},
             components={"demo/math:1.0.0": math(), "demo/math:1.0.1": with_custom_section(math(), b"1.0.1")})  # fmt: skip
        newer = p.registry.digest("demo/math:1.0.1")
        p.git.push({"staging/apps/calc.yaml": calc("1.0.1")}, "staging: math 1.0.1")
        wait_until(lambda: (a := p.reconciler.app("staging", "calc"))["health"] == "Healthy"
                   and a["components"][0]["digest"] == newer, timeout=60, what="staging runs 1.0.1")
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.add_init_script(f"localStorage.setItem('driftless.readToken', {p.admin_token()!r});")
                page = context.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text)
                        if m.type == "error" and "status of 409" not in m.text else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(f"{p.reconciler.url}/")
                prod_calc = page.locator('.env[data-env="prod"] article[data-app="calc"]')
                sync_api.expect(page.locator('.env[data-env="prod"] .promo')).to_contain_text("four eyes",
                                                                                             timeout=20_000)
                # the admin approves ahead: listed, but it does not count for the admin's own promotion
                prod_calc.locator("button.approve-ahead").click()
                sync_api.expect(prod_calc.locator(".approvals")).to_contain_text(ADMIN, timeout=10_000)
                prod_calc.locator("button.check").click()
                gate = prod_calc.locator('.gate[data-gate="approval"]')
                sync_api.expect(gate).to_contain_text("their own approval does not count", timeout=20_000)
                assert prod_calc.locator("button.promote").is_disabled()

                # bob approves (the API a second person's CLI calls); the page, checked again, may promote
                r = httpx.post(f"{p.reconciler.url}/api/v1/approvals", json={"app": "calc", "to": "prod"},
                               headers={"Authorization": f"Bearer {BOB}"}, timeout=10)
                assert r.status_code == 200, r.text
                prod_calc.locator("button.check").click()
                promote = prod_calc.locator("button.promote")
                sync_api.expect(promote).to_be_enabled(timeout=20_000)
                promote.click()
                sync_api.expect(prod_calc.locator(".committed code.commit")).to_be_visible(timeout=30_000)
                body = subprocess.run(["git", "--git-dir", str(p.git.bare), "log", "-1", "--format=%b", "main"],
                                      check=True, capture_output=True, text=True).stdout
                assert f"Approved-By: {ADMIN}\nApproved-By: bob\n" in body, body
                assert problems == [], "\n".join(problems)
            finally:
                browser.close()
    finally:
        p.stop()
