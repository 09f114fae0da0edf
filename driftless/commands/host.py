"""``driftless host``: run a host agent; ``driftless host exec``: talk to a host's admin API.

    driftless host --control URL --token T --name NAME --label cloud=aws --listen 127.0.0.1:8081 --data DIR
    driftless host --desired desired.yaml --listen 127.0.0.1:8081         # standalone, no reconciler
    driftless host exec --admin http://127.0.0.1:9081 [--token-file DATA/admin-token] ls|status|run|stop|...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from driftless.endpoints import default_data_dir, load_up_json
from shared import http, units
from shared.errors import Refused, UsageError

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]i?)?B?$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
              "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}  # fmt: skip


def parse_size(text: str) -> int:
    m = SIZE_RE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 512Mi, 1Gi or 1048576")
    return int(m.group(1)) * SIZE_UNITS[(m.group(2) or "").lower()]


def parse_listen(text: str) -> tuple[str, int]:
    try:
        return units.parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.allow_abbrev = False  # `host exec --admin URL` must not read as an abbreviation of --admin-listen/--admin-token-file
    p.add_argument("--control", metavar="URL", help="reconciler URL to connect out to (e.g. http://10.0.0.5:8080); "
                   "replicated reconcilers: several, comma-separated (the host follows the leader)")
    p.add_argument("--control-ca", metavar="FILE", help="CA bundle to trust for an https reconciler")
    p.add_argument("--desired", type=Path, metavar="FILE",
                   help="standalone: run the HostDesiredState in FILE (JSON/YAML), re-read when it changes")
    p.add_argument("--token", help="join token (default: $DRIFTLESS_TOKEN); only registers the host")
    p.add_argument("--token-file", type=Path, metavar="FILE", help="read the join token from FILE")
    p.add_argument("--name", default=None, help="host name (default: the machine's hostname)")
    p.add_argument("--label", action="append", type=parse_pair, default=[], metavar="KEY=VALUE",
                   help="host label used for placement (repeatable); os, arch, version and platform are automatic")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8081), metavar="HOST:PORT",
                   help="ingress where exposed components are served (default 127.0.0.1:8081)")
    p.add_argument("--data-path", choices=("haproxy", "python"), default="haproxy",
                   help="what serves --listen: 'haproxy' (default; the native data path, HAProxy from the "
                        "'haproxy' package, configured by the agent; the Python ingress serves its slow paths) or "
                        "'python' (the Python ingress alone: slower, no HAProxy needed)")
    p.add_argument("--admin-listen", type=parse_listen, default=None, metavar="HOST:PORT",
                   help="host-local admin API (off unless given; keep it on loopback)")
    p.add_argument("--admin-token-file", type=Path, default=None, metavar="FILE",
                   help="the admin API's own credential (default DATA/admin-token; created with a random token, "
                        "mode 0600, when missing)")
    p.add_argument("--metrics-token-file", type=Path, default=None, metavar="FILE",
                   help="read-only credential for GET /metrics on the admin listener, for Prometheus (default "
                        "DATA/metrics-token; created like the admin token)")
    p.add_argument("--track-token-file", type=Path, default=None, metavar="FILE",
                   help="honour x-driftless-track (force the canary or stable side) only on requests that "
                        "carry x-driftless-track-token with the token in FILE (created 0600 when missing; one "
                        "file for every host); without it the header is ignored")
    p.add_argument("--advertise", metavar="URL", help="ingress URL reported to the reconciler (default from --listen)")
    p.add_argument("--data", type=Path, default=None,
                   help="state directory: last desired state, component info, credentials (default $DRIFTLESS_DATA/host-NAME)")
    p.add_argument("--heartbeat", type=float, default=3.0, metavar="SECONDS", help="report interval (default 3)")
    p.add_argument("--registry", metavar="URL", default=None,
                   help="the platform registry (e.g. https://registry.example.com:5000): --registry-user's credential "
                        "goes to it alone (same host:port, same scheme)")
    p.add_argument("--registry-user", default=os.environ.get("DRIFTLESS_REGISTRY_USER"),
                   help="the platform registry's username (password from $DRIFTLESS_REGISTRY_PASSWORD); needs --registry")
    p.add_argument("--registry-credentials", type=Path, default=None, metavar="FILE",
                   help="credentials of other registries (YAML {host[:port]: {username, password}} or a docker "
                        "config.json; mode 0600); a registry in neither is pulled from anonymously")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="reach this registry over plain http (loopback registries always are)")
    p.add_argument("--registry-ca", metavar="FILE", help="CA bundle for https registries")
    p.add_argument("--max-instances", type=int, default=10_000, help="capacity: instances (default 10000)")
    p.add_argument("--memory", type=parse_size, default=None, metavar="SIZE",
                   help="capacity: memory to advertise (default: the machine's)")
    p.add_argument("--cache-size", type=parse_size, default=1 << 30, metavar="SIZE",
                   help="bound of the compiled-component cache, LRU; files a host uses are never evicted (default 1Gi)")
    p.add_argument("--compile-cache", type=Path, default=None, metavar="DIR",
                   help="compiled-component cache shared by the hosts of this machine: each component compiles "
                        "once, the others wait and load it (default $DRIFTLESS_COMPILE_CACHE, else "
                        "/var/cache/driftless/compiled as root, else $XDG_CACHE_HOME/driftless/compiled)")
    p.add_argument("--fast-tier-above", type=_size_or_off, default=1 << 20, metavar="SIZE",
                   help="standard (wasi:http) components at least this big first serve from a fast Winch build "
                        "while Cranelift compiles the optimised one, then swap (default 1Mi; 'off': never)")
    p.add_argument("--memory-reservation", type=parse_size, default=None, metavar="SIZE",
                   help="address space reserved per linear memory (default wasmtime's 4Gi); e.g. 64Mi for "
                        "hosts with very many instances or a small address space")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long in-flight calls may finish on replacement and SIGTERM (default 30)")
    p.add_argument("--default-timeout", type=int, default=30_000, metavar="MS",
                   help="per-call deadline when the manifest sets none (default 30000)")
    p.add_argument("--default-concurrency", type=int, default=16, metavar="N",
                   help="concurrent calls per instance when the manifest sets none (default 16)")
    # two forms: the agent (the options above) and `host exec` (a subcommand, not an argument of the agent)
    p.usage = ("driftless host [--control URL | --desired FILE] [--name NAME] [--label KEY=VALUE ...] "
               "[--listen HOST:PORT] [options]\n"
               "       driftless host exec --admin URL [--token-file FILE] {ls,status,run,stop,...} ...")
    p.description = ("Run a host agent that runs components with wasmtime (the options below), or talk to a "
                     "running host's admin API with the subcommand `driftless host exec`.")
    sub = p.add_subparsers(dest="host_action", metavar="exec", title="subcommand",
                           description="driftless host exec --help: its actions (ls, status, run, stop, ...)")
    ex = sub.add_parser("exec", help="talk to a running host's admin API (out-of-band changes)",
                        description="Out-of-band changes through a host's admin API; they last until the "
                                    "next desired generation arrives.")  # fmt: skip
    ex.add_argument("--admin", required=True, metavar="URL", help="admin API URL, e.g. http://127.0.0.1:9081")
    ex.add_argument("--token-file", dest="exec_token_file", type=Path, metavar="FILE",
                    help="the host's admin credential (its --admin-token-file; default: $DRIFTLESS_ADMIN_TOKEN_FILE, "
                         "else the file of the host of a local `driftless up` at --admin)")
    ex.add_argument("-o", "--output", choices=("text", "json"), default="text",
                    help="output format (default text)")
    ex.add_argument("--json", dest="output", action="store_const", const="json", help="same as -o json")
    acts = ex.add_subparsers(dest="exec_action", metavar="ACTION", required=True)
    acts.add_parser("ls", help="list instances")
    acts.add_parser("status", help="host status: generation, compilations, cache")
    run = acts.add_parser("run", help="start an unmanaged instance")
    run.add_argument("image", help="fully qualified, pinned: REGISTRY/REPO@sha256:...")
    run.add_argument("--env", required=True)
    run.add_argument("--app", required=True)
    run.add_argument("--component", required=True)
    run.add_argument("--id", default="", help="instance id (default ENV/APP/COMPONENT/oob-N)")
    run.add_argument("--route", default=None, help="serve at this path prefix on the ingress")
    run.add_argument("--config", action="append", type=parse_pair, default=[], metavar="KEY=VALUE")
    run.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                     help="wait up to SECONDS for the instance to run (default 30; 0: do not wait)")
    stop = acts.add_parser("stop", help="stop an instance")
    stop.add_argument("id")
    sc = acts.add_parser("set-config", help="replace an instance's config (the instance restarts with it)")
    sc.add_argument("id")
    sc.add_argument("config", nargs="*", type=parse_pair, metavar="KEY=VALUE")
    si = acts.add_parser(
        "set-image", help="run an instance from another image (emergency hotfix; the instance restarts with it)",
        description="Replace an instance with another image, rolling (the new one serves before the old one "
                    "drains). A tag is resolved to its digest through the registry first. Lasts until the next "
                    "desired generation: the reconciler reports it as VersionMismatch drift, or heals it.",
    )  # fmt: skip
    si.add_argument("id")
    si.add_argument("image", metavar="IMAGE", help="REGISTRY/REPO@sha256:... or REGISTRY/REPO:TAG (resolved to a digest)")


def _size_or_off(text: str) -> int | None:
    return None if text.strip().lower() == "off" else parse_size(text)


def _token(explicit: str | None, path: Path | None) -> str | None:
    if explicit and path is not None:
        raise UsageError("give --token or --token-file, not both")
    if explicit:
        return explicit
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None
    return os.environ.get("DRIFTLESS_TOKEN") or None


def run(args: argparse.Namespace) -> int:
    if getattr(args, "host_action", None) == "exec":
        return _exec(args)
    from host.agent import HostOptions, run_host
    from host.puller import RegistryAccess
    from host.runtime import RuntimeDefaults

    if args.control and args.desired:
        raise UsageError("give either --control (a reconciler) or --desired (a static file), not both")
    name = args.name or socket.gethostname()
    if not HOST_NAME_RE.match(name):
        raise UsageError(
            f"host name {name!r} is not valid: use letters, digits, '.', '_' and '-' (at most 253)",
            hint="pass --name edge-1",
        )
    data = args.data or (default_data_dir() / f"host-{name}")
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use data directory {data}: {exc.strerror}", hint="pass a writable --data DIR") from None
    if args.compile_cache is not None:
        try:
            args.compile_cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use compile cache {args.compile_cache}: {exc.strerror}",
                             hint="pass a writable --compile-cache DIR") from None
    if not args.control and not args.desired:
        print("driftless host: no --control or --desired: running only what the admin API starts", file=sys.stderr)
    if args.registry_user and not args.registry:
        raise UsageError(
            "--registry-user (or $DRIFTLESS_REGISTRY_USER) needs --registry URL: the registry that credential is "
            "for (it is sent to no other)",
            hint="pass --registry http://127.0.0.1:5000 (the platform registry's URL)",
        )
    registry_credentials = {}
    if args.registry_credentials is not None:
        from shared.registry_auth import load_credentials_file

        registry_credentials = load_credentials_file(args.registry_credentials)  # refused now when unusable
    options = HostOptions(
        name=name,
        data=data,
        listen=args.listen,
        control=args.control,
        control_ca=args.control_ca,
        token=_token(args.token, args.token_file),
        desired_file=args.desired,
        labels=dict(args.label),
        data_path=args.data_path,
        admin_listen=args.admin_listen,
        admin_token_file=args.admin_token_file,
        metrics_token_file=args.metrics_token_file,
        track_token_file=args.track_token_file,
        advertise=args.advertise,
        heartbeat=args.heartbeat,
        access=RegistryAccess(
            username=args.registry_user,
            password=os.environ.get("DRIFTLESS_REGISTRY_PASSWORD"),
            insecure=tuple(args.insecure_registry),
            ca_file=args.registry_ca,
            registry=args.registry,
            credentials=registry_credentials,
        ),
        max_instances=args.max_instances,
        memory_bytes=args.memory,
        cache_max_bytes=args.cache_size,
        compile_cache=args.compile_cache,
        fast_tier_above=args.fast_tier_above,
        memory_reservation=args.memory_reservation,
        drain_seconds=args.drain_timeout,
        defaults=RuntimeDefaults(timeout_ms=args.default_timeout, max_concurrency=args.default_concurrency),
    )
    return run_host(options)


def _exec_token(args: argparse.Namespace) -> str | None:
    """The host's admin credential: --token-file, $DRIFTLESS_ADMIN_TOKEN_FILE, else the admin token file
    of the host of a local `driftless up` whose admin API is --admin (never the join token)."""
    path: Path | None = args.exec_token_file
    if path is None and os.environ.get("DRIFTLESS_ADMIN_TOKEN_FILE"):
        path = Path(os.environ["DRIFTLESS_ADMIN_TOKEN_FILE"])
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise UsageError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    admin = args.admin.rstrip("/")
    for h in load_up_json().get("hosts") or []:
        if isinstance(h, dict) and str(h.get("admin", "")).rstrip("/") == admin and h.get("adminTokenFile"):
            try:
                return Path(h["adminTokenFile"]).read_text().strip() or None
            except OSError:
                return None
    return None


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None, *,
          params: dict[str, str] | None = None) -> Any:
    url = args.admin.rstrip("/") + path
    token = _exec_token(args)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with http.client(timeout=10) as client:
            r = client.request(method, url, params=params, content=data, headers=headers)
    except httpx.TransportError as exc:
        raise http.not_reachable(exc, url=args.admin, what="host admin API", verb="is not reachable",
                                 hint="is the host started with --admin-listen?") from None
    if r.status_code >= 400:
        try:
            message = json.loads(r.content).get("error")
        except (ValueError, AttributeError):
            message = None
        raise Refused(f"host admin API answered {r.status_code}: {message or r.reason_phrase}")
    return json.loads(r.content or b"null")


def _status_text(out: dict[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in (out.get("labels") or {}).items())
    cache = out.get("cache") or {}
    return "\n".join([
        f"host          {out.get('name')} (driftless {out.get('version')})",
        f"labels        {labels or '-'}",
        f"ingress       {out.get('ingressUrl') or '-'}",
        f"control       {out.get('control') or '-'} ({'connected' if out.get('connected') else 'not connected'})",
        f"generation    {out.get('observedGeneration')}",
        f"instances     {out.get('instances')} ({out.get('inflight', 0)} calls in flight)",
        f"compilations  {out.get('compilations')} (cache hits {out.get('cacheHits', 0)}, "
        f"in memory {out.get('memoryHits', 0)}; cache {cache.get('entries', 0)} entries, {cache.get('bytes', 0)} bytes)",
        f"engine        {out.get('engine') or '-'}",
    ])


def _exec(args: argparse.Namespace) -> int:
    from driftless.commands.status import iso_times  # -o json: times in ISO 8601

    action = args.exec_action
    as_json = args.output == "json"
    if action == "ls":
        out = _call(args, "GET", "/api/v1/instances")
        if as_json:
            print(json.dumps(iso_times(out), indent=2))
            return 0
        print(f"observed generation {out.get('observedGeneration')}")
        instances = out.get("instances", [])
        width = max([len(i["id"]) for i in instances] + [10])
        for i in instances:
            flag = "" if i.get("managed", True) else " (unmanaged)"
            print(f"{i['id']:<{width}}  {i['status']:<10} {i.get('digest', '')[:19]:<20} {i.get('route') or '-'}"
                  f" restarts={i.get('restarts', 0)}{flag}")  # fmt: skip
            if i.get("lastError"):
                print(f"    last error: {i['lastError']}")
        return 0
    if action == "status":
        status = _call(args, "GET", "/api/v1/status")
        print(json.dumps(iso_times(status), indent=2) if as_json else _status_text(status))
        return 0
    if action == "run":
        from shared.reference import ReferenceError, parse

        try:
            ref = parse(args.image)
        except ReferenceError as exc:
            raise UsageError(str(exc)) from None
        if not ref.digest or not ref.registry:
            raise UsageError(f"{args.image} must be fully qualified and pinned: REGISTRY/REPO@sha256:...")
        body = {"id": args.id, "env": args.env, "app": args.app, "component": args.component,
                "image": args.image, "digest": ref.digest, "config": dict(args.config), "route": args.route}  # fmt: skip
        out = _call(args, "POST", "/api/v1/instances", body)
        instance_id = out["instance"]["id"]
        status = _wait_running(args, instance_id, timeout=args.wait) if args.wait > 0 else "Starting"
        print(json.dumps(iso_times(out), indent=2) if as_json else f"started {instance_id} ({status})")
        return 0
    if action == "stop":
        out = _call(args, "DELETE", "/api/v1/instances", params={"id": args.id})
        print(json.dumps(iso_times(out) if out is not None else {"stopped": args.id}, indent=2) if as_json
              else f"stopped {args.id}")
        return 0
    if action == "set-config":
        out = _call(args, "PATCH", "/api/v1/instances", {"config": dict(args.config)},
                    params={"id": args.id})  # fmt: skip
        print(json.dumps(iso_times(out), indent=2) if as_json else f"reconfigured {args.id}")
        return 0
    if action == "set-image":
        image, digest, resolved = _pinned_image(args.image)
        out = _call(args, "PATCH", "/api/v1/instances", {"image": image, "digest": digest},
                    params={"id": args.id})  # fmt: skip
        if as_json:
            print(json.dumps(iso_times(out), indent=2))
            return 0
        if resolved:
            print(f"resolved {args.image} to {digest}")
        print(f"replacing {args.id} with {image} (until the next desired generation)")
        return 0
    raise UsageError(f"unknown action {action}")


def _wait_running(args: argparse.Namespace, instance_id: str, *, timeout: float) -> str:
    """Poll the admin API until the instance runs; a failure to start is an error with the host's reason."""
    deadline = time.monotonic() + timeout
    while True:
        listed = _call(args, "GET", "/api/v1/instances").get("instances", [])
        mine = next((i for i in listed if i.get("id") == instance_id), None)
        status = mine.get("status", "absent") if mine else "absent"
        if status == "Running":
            return status
        if status == "absent":
            # not a failure: a newer desired generation removed it (an environment that heals drift)
            return "removed again by a newer desired generation"
        if status in ("Failed", "BackOff"):
            raise Refused(f"{instance_id} did not start ({status}): {mine and mine.get('lastError')}")
        if time.monotonic() >= deadline:
            return status
        time.sleep(0.05)


def _pinned_image(text: str) -> tuple[str, str, bool]:
    """(pinned image, digest, whether a tag was resolved) for ``set-image``'s IMAGE."""
    from shared.reference import ReferenceError, parse
    from shared.registry_client import resolve

    try:
        ref = parse(text)
    except ReferenceError as exc:
        raise UsageError(str(exc)) from None
    if not ref.registry:
        raise UsageError(f"{text} must be fully qualified: REGISTRY/REPO@sha256:... or REGISTRY/REPO:TAG",
                         hint="the host pulls from the registry the reference names, e.g. 127.0.0.1:5000/demo/hello:2.0.0")  # fmt: skip
    if ref.digest:
        return text, ref.digest, False
    digest = resolve(ref)  # NotReachable / RegistryClientError are clean one-line errors already
    if not digest:
        raise Refused(f"registry {ref.registry} has no {ref.repository}:{ref.identifier}",
                      hint="push it first (`driftless push`), or pass a digest: REGISTRY/REPO@sha256:...")  # fmt: skip
    return str(ref.pinned(digest)), digest, True
