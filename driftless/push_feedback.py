"""What the post-receive hook ``driftless up`` installs tells the pusher (git shows it as ``remote: ...``):
whether the pushed revision was applied or rejected, per environment (each applies its own part of a
commit: a problem in ``dev/`` rejects dev only), with every problem at its file:line.

    printf '%s\\n' "$refs" | python -m driftless.push_feedback --url URL --token-file FILE [--cacert CA]

It reads the hook's stdin (``<old> <new> <ref>`` per line), asks the reconciler (``GET
/api/v1/environments``, as a viewer: ``driftless up``'s DATA/hook-token, user git-hook) until the revision pushed to the branch it
follows is applied or rejected, for at most ``--wait`` seconds, and always exits 0: the push is done,
this only reports on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ZERO = "0" * 40


def pushed_revision(lines: list[str], branch: str) -> str | None:
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[2] == f"refs/heads/{branch}" and parts[1] != ZERO:
            return parts[1]
    return None


def outcome(source: dict[str, Any], revision: str) -> list[str] | None:
    """What to tell the pusher once the reconciler has decided on ``revision`` for every environment;
    None while it has not."""
    envs = source.get("environments")
    if isinstance(envs, dict) and envs:
        return _per_environment(source, envs, revision)
    return _whole(source, revision)  # a reconciler from before per-environment application


def _prefix(source: dict[str, Any]) -> str:
    prefix = source.get("path") or ""
    return "" if prefix in ("", ".") else prefix.rstrip("/") + "/"


def _per_environment(source: dict[str, Any], envs: dict[str, Any], revision: str) -> list[str] | None:
    short = revision[:12]
    applied, rejected = [], []
    for name, e in sorted(envs.items()):
        if ((e or {}).get("rejected") or {}).get("revision") == revision:
            rejected.append(name)
        elif ((e or {}).get("applied") or {}).get("revision") == revision:
            applied.append(name)
        else:
            return None  # not decided for this environment yet
    if not rejected:
        return [f"driftless: revision {short} applied to {', '.join(applied)}"]
    single = len(rejected) == 1 and not applied  # one environment in all: say it as before environments
    out = [] if single else [f"driftless: revision {short} " + (f"applied to {', '.join(applied)}; " if applied else "")
                             + f"rejected for {', '.join(rejected)}"]
    prefix = _prefix(source)
    for name in rejected:
        rej = envs[name]["rejected"]
        errors = rej.get("errors") or []
        kept = ((envs[name].get("applied") or {}).get("revision") or "")[:12]
        kept = f"{kept} stays applied" if kept else "nothing applied yet"
        out.append(f"driftless: revision {short} rejected ({len(errors)} error(s)); {kept}:" if single
                   else f"driftless: {name}: rejected ({len(errors)} error(s)); {kept} in {name}:")
        for e in errors[:20]:
            out.append(f"driftless:   {prefix if e.get('file') else ''}{e.get('text') or e.get('message')}")
        if errors and all(e.get("code") == "unknown-image" for e in errors):
            out.append(f"driftless: {name} applies it once the registry holds the image(s) (driftless push)")
    return out


def _whole(source: dict[str, Any], revision: str) -> list[str] | None:
    short = revision[:12]
    applied = (source.get("applied") or {}).get("revision")
    rejected = source.get("rejected") or {}
    if applied == revision:
        return [f"driftless: revision {short} applied"]
    if rejected.get("revision") == revision:
        prefix = _prefix(source)
        errors = rejected.get("errors") or []
        kept = f"{applied[:12]} stays applied" if applied else "nothing applied yet"
        out = [f"driftless: revision {short} rejected ({len(errors)} error(s)); {kept}:"]
        for e in errors[:20]:
            out.append(f"driftless:   {prefix if e.get('file') else ''}{e.get('text') or e.get('message')}")
        if errors and all(e.get("code") == "unknown-image" for e in errors):
            out.append("driftless: it is applied once the registry holds the image(s) (driftless push)")
        return out
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m driftless.push_feedback")
    p.add_argument("--url", required=True)
    p.add_argument("--token-file", type=Path, required=True)
    p.add_argument("--branch", default="main")
    p.add_argument("--cacert", default=None)
    p.add_argument("--wait", type=float, default=10.0)
    args = p.parse_args(argv)
    revision = pushed_revision(sys.stdin.read().splitlines(), args.branch)
    if revision is None:
        return 0
    try:
        report(args, revision)
    except Exception as exc:  # never fail (or clutter) the push beyond one line
        print(f"driftless: could not ask the reconciler about {revision[:12]}: {exc}", flush=True)
    return 0


def report(args: argparse.Namespace, revision: str) -> None:
    import httpx

    from shared import http

    token = args.token_file.read_text().strip()
    started = time.monotonic()
    deadline = started + args.wait
    last_error, answered = "", False
    with http.client(timeout=http.timeout(2), ca_file=args.cacert,
                     headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            try:
                r = client.get(f"{args.url.rstrip('/')}/api/v1/environments")
                answered = True
                if r.status_code == 200:
                    lines = outcome(r.json().get("source") or {}, revision)
                    if lines is not None:
                        print("\n".join(lines), flush=True)
                        return
                else:
                    last_error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last_error = http.reason(exc)
                if not answered and time.monotonic() - started > 1.0:
                    break  # the reconciler is not running: do not hold the push
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    why = f" ({last_error})" if last_error else ""
    print(f"driftless: revision {revision[:12]} not reconciled within {args.wait:g}s{why}; "
          "see `driftless status`", flush=True)


if __name__ == "__main__":
    sys.exit(main())
