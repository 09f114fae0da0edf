"""The README tells the truth: its walkthrough runs exactly as written against a real `driftless up`.

The walkthrough's ```sh blocks run in order in one bash session (``set -euo pipefail``) from a
directory that looks like the checkout, with HOME pointed at a fresh directory so ``~/.driftless``
is this test's own, and no git identity at all (no ~/.gitconfig, no GIT_* identity variables, git
told not to guess one from the host name): the walkthrough must work on a machine where git does not
know the user yet. The line ``./hack/up.sh`` (terminal 1) is the one thing not run verbatim: the
test starts ``driftless up`` itself, in the background, because it never returns. ```python blocks
run with this interpreter. ```text blocks are output or tools not installed here (the oras CLI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
UP_PORTS = (5000, 8080, 8081, 8082, 8083, 9081, 9082, 9083)


def walkthrough_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_cli_reference_is_generated_from_the_code() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "hack" / "cli_reference.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_documents_every_command() -> None:
    from driftless.cli import COMMANDS

    text = README.read_text()
    for name in COMMANDS:
        assert f"### `driftless {name}`" in text, f"README lacks the reference of `driftless {name}`"


def test_walkthrough_has_the_steps_users_need() -> None:
    script = "\n".join(body for kind, body in walkthrough_blocks() if kind == "sh")
    for needed in ("./hack/up.sh", "driftless push", "git push", "curl", "driftless status", "driftless drift",
                   "driftless promote", "driftless rollback"):
        assert needed in script, f"walkthrough lacks {needed!r}"


def test_every_wait_in_the_walkthrough_is_bounded_and_says_what_it_waited_for() -> None:
    """A loop that waits for something that never comes must end and say so, not hang the reader."""
    script = "\n".join(body for kind, body in walkthrough_blocks() if kind == "sh").replace("\\\n", " ")
    loops = [line for line in script.splitlines() if re.search(r"\b(until|while)\b", line)]
    assert loops, "the walkthrough waits for the rollout somewhere"
    for line in loops:
        assert re.match(r"^timeout \d+ ", line.strip()), f"unbounded wait: {line}"
        assert re.search(r'\|\| echo ".*did not .*"', line), f"a wait that does not say what it waited for: {line}"


@pytest.mark.timeout(480)
def test_walkthrough_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "checkout"
    home.mkdir()
    work.mkdir()
    # a directory that looks like the checkout: the walkthrough uses examples/ and .venv/
    for entry in ("examples", "hack", "manifests"):
        (work / entry).symlink_to(ROOT / entry)
    venv = Path(sys.prefix)
    (work / ".venv").symlink_to(venv if (venv / "bin" / "activate").exists() else ROOT / ".venv")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLESS_", "GIT_"))},
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # no git identity: no system config, and no identity guessed from user@hostname either (git
        # guesses one on some machines and refuses on others; refusing is the case the README must survive)
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "user.useConfigOnly",
        "GIT_CONFIG_VALUE_0": "true",
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
        # the user's build cache (components built by standard toolchains, wasmtime's compile cache)
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
    }
    blocks = walkthrough_blocks()
    assert blocks[0] == ("sh", "./hack/up.sh\n"), "the walkthrough starts with ./hack/up.sh on its own"
    up_log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "driftless", "up"], cwd=work, env=env, stdout=up_log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    transcript = tmp_path / "walkthrough.log"
    try:
        up_json = home / ".driftless" / "up.json"

        deadline = time.monotonic() + 120
        while not (up_json.exists() and "Driftless is up" in (tmp_path / "up.log").read_text()):
            assert up.poll() is None, f"driftless up exited: {(tmp_path / 'up.log').read_text()}"
            assert time.monotonic() < deadline, "driftless up was not ready within 120 s"
            time.sleep(0.2)
        info = json.loads(up_json.read_text())
        assert [h["labels"] for h in info["hosts"]] == [
            {"cloud": "aws", "region": "us-east-1"}, {"cloud": "gcp", "region": "europe-west1"}, {"tier": "edge"}]

        with open(transcript, "w") as out:
            for kind, body in blocks[1:]:
                if kind == "sh":
                    _run(["bash", "-c", "set -euo pipefail\n" + body], work, env, out, body)
                    # `cd demo` in a block carries over to the next ones, as in one terminal
                    if "cd demo" in body:
                        work = work / "demo"
                elif kind == "python":
                    _run([sys.executable, "-c", body], work, env, out, body)
        text = transcript.read_text()
        # what the walkthrough promises, checked in its own output
        assert "Hello from prod" in text
        assert "Bonjour from dev" in text
        assert "hello from python: Hello from Python in dev" in text  # componentize-py, woken from Idle
        assert "world:   wasi:http/proxy" in text
        assert "hello from js: Hello from JavaScript in dev" in text  # componentize-js, deployed by git push
        assert "drift exit status: 2" in text
        assert "Promoted-Digest: web=sha256:" in text
        assert "rollback(hello): prod to" in text
        ran_out = re.findall(r"^\S+ did not .*$", text, flags=re.M)  # what a bounded wait says when it gives up
        assert not ran_out, f"a wait of the walkthrough ran out: {ran_out}"
        # the soak text agrees with the gates: the out-of-band instance was drift (stopped before the promotion)
        assert re.search(r"pass\s+no-drift\s+hello in staging runs what it declares", text), text[-3000:]
        assert re.search(r"pass\s+min-soak\s+healthy for", text)
        # the manifest the sed makes says JavaScript everywhere (no comment left about py-hello or /dev/py)
        js = (work / "manifests" / "dev" / "apps" / "hello-js.yaml").read_text()
        assert not re.search(r"py-hello|app\.py|Python|/py\b|componentize-py", js), js
        # oras pushed to its own tag: 1.1.0 is still the digest `driftless push` made
        pushed = text.split("$ driftless push demo/hello:1.1.0", 1)[1].split("$ ", 1)[0]
        served = httpx.head("http://127.0.0.1:5000/v2/demo/hello/manifests/1.1.0",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
        assert served.headers["Docker-Content-Digest"] in pushed, (pushed, served.headers)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
        up_log.close()
        if transcript.exists():
            print(transcript.read_text()[-6000:])
        print((tmp_path / "up.log").read_text()[-4000:])
        shutil.rmtree(home / ".driftless" / "registry", ignore_errors=True)
    assert code == 0, "Ctrl-C stops driftless up cleanly"
    assert not (home / ".driftless" / "up.json").exists()


def _run(cmd: list[str], cwd: Path, env: dict[str, str], out: object, body: str) -> None:
    started = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=150)
    print(f"$ {body.strip()}\n{r.stdout}{r.stderr}[exit {r.returncode} in {time.monotonic() - started:.1f}s]\n",
          file=out, flush=True)  # type: ignore[call-overload]
    assert r.returncode == 0, f"README block failed:\n{body}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
