"""``driftless registry serve|gc|fsck``: run and maintain the OCI registry."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared import units
from shared.errors import DriftlessError, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="registry_command", metavar="SUBCOMMAND")
    serve = sub.add_parser("serve", help="serve the OCI Distribution API (and /v2/_driftless/) from a storage root")
    serve.add_argument("--root", type=Path, help="storage directory (created if absent); or --storage")
    _storage_arguments(serve)
    serve.add_argument("--listen", default="127.0.0.1:5000", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--htpasswd", type=Path, help="require basic auth from users in this htpasswd file (bcrypt)")
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    serve.add_argument("--read-only", action="store_true", help="refuse every write (push, delete)")
    serve.add_argument("--anonymous-pull", action="store_true", help="with --htpasswd: let reads through without credentials")
    serve.add_argument("--access-policy", type=Path, metavar="FILE",
                       help="per-repository access control: YAML or JSON mapping repository globs to pull/push/delete "
                            "for htpasswd users and anonymous (see docs/registry.md)")
    serve.add_argument("--auth-failure-limit", type=int, default=10, metavar="N",
                       help="failed logins per user and address per minute before 429 Too Many Requests "
                            "(default 10; 0: no limit)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="serving processes on the one port (SO_REUSEPORT), sharing only the storage; a dead one "
                            "is restarted (default: one per CPU with --storage, 1 with --root)")
    serve.add_argument("--cache-ttl", type=float, metavar="SECONDS",
                       help="how long tags, manifest and blob links read from storage are cached: what other workers, "
                            "replicas or gc change is seen within this (default 1 with --storage, 0 with --root)")

    gc = sub.add_parser("gc", help="delete blobs and manifests no tag reaches (with --storage: every replica "
                                   "serving it must run --read-only)")
    gc.add_argument("--root", type=Path, help="storage directory; or --storage")
    _storage_arguments(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument("--delete-untagged", action="store_true",
                    help="also delete manifests no tag reaches (default: keep them, digests pinned elsewhere stay pullable)")
    gc.add_argument("--grace", default="10m", help="keep anything written more recently than this (e.g. 30s, 10m, 2h; default 10m)")
    gc.add_argument("--stale-uploads", default="24h", metavar="DURATION",
                    help="remove upload sessions that received nothing for this long (default 24h)")

    fsck = sub.add_parser("fsck", help="re-hash every blob; quarantine corrupt ones (exit 1 if any problem)")
    fsck.add_argument("--root", type=Path, help="storage directory; or --storage")
    _storage_arguments(fsck)


def _storage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="s3://BUCKET/PREFIX",
                   help="keep everything in an S3 bucket under PREFIX instead of --root (credentials: "
                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared credentials file; region: "
                        "AWS_REGION, default us-east-1)")
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="with --storage: the S3 API's URL, e.g. http://127.0.0.1:8333 for MinIO or SeaweedFS "
                        "(path-style addressing); default: AWS")


def parse_listen(text: str) -> tuple[str, int]:
    try:
        return units.parse_listen(text)
    except ValueError as exc:
        raise UsageError(f"--listen {exc}", hint="for example --listen 127.0.0.1:5000") from None


def parse_duration(text: str, *, option: str = "--grace") -> float:
    try:
        return units.duration_seconds(text if not text.strip().replace(".", "", 1).isdigit() else float(text))
    except ValueError as exc:
        raise UsageError(f"{option} {exc}", hint="use a number with s, m, h or d, e.g. 10m") from None


def _check_storage_choice(args: argparse.Namespace) -> None:
    if (args.root is None) == (args.storage is None):
        raise UsageError("give either --root DIR or --storage s3://BUCKET/PREFIX",
                         hint="--root keeps the registry in a directory; --storage in an S3 bucket")
    if args.s3_endpoint and not args.storage:
        raise UsageError("--s3-endpoint goes with --storage s3://BUCKET/PREFIX")
    if args.storage is not None:
        from registry.storage_s3 import parse_s3_url

        try:
            parse_s3_url(args.storage)
        except ValueError as exc:
            raise UsageError(f"--storage {exc}", hint="for example --storage s3://registry/prod") from None


def _open_storage(args: argparse.Namespace) -> Any:
    """The driver for gc and fsck: the S3 bucket of --storage, or the directory of --root."""
    _check_storage_choice(args)
    if args.storage is not None:
        from registry.storage_s3 import S3Storage

        return S3Storage.from_url(args.storage, endpoint=args.s3_endpoint)
    from registry.storage import FilesystemStorage

    return FilesystemStorage(_existing_root(args.root))


def _existing_root(root: Path) -> Path:
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory", hint="point it at the directory `registry serve --root` uses")
    return root


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "registry_command", None)
    if command == "serve":
        return _serve(args)
    if command == "gc":
        return _gc(args)
    if command == "fsck":
        return _fsck(args)
    raise UsageError("choose a subcommand: driftless registry serve|gc|fsck", hint="driftless registry --help")


def _serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    _check_storage_choice(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    for opt, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--htpasswd", args.htpasswd),
                      ("--access-policy", args.access_policy)):
        if path is not None and not path.is_file():
            raise UsageError(f"{opt} {path}: no such file")
    if args.anonymous_pull and not args.htpasswd:
        raise UsageError("--anonymous-pull only makes sense with --htpasswd (without it every request is anonymous)")
    if args.auth_failure_limit < 0:
        raise UsageError("--auth-failure-limit must be 0 (no limit) or more")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    if args.cache_ttl is not None and not 0 <= args.cache_ttl <= 3600:
        raise UsageError("--cache-ttl must be between 0 (no caching) and 3600 seconds")
    from registry.server import ServerOptions, serve  # aiohttp loads only once the options are sound

    options = ServerOptions(
        root=args.root or Path("."),  # unused with --storage
        host=host,
        port=port,
        htpasswd=args.htpasswd,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        read_only=args.read_only,
        anonymous_pull=args.anonymous_pull,
        access_policy=args.access_policy,
        auth_failure_limit=args.auth_failure_limit,
        storage=args.storage,
        s3_endpoint=args.s3_endpoint,
        cache_ttl=args.cache_ttl,
    )
    from registry.workers import default_workers, serve_workers

    options = replace(options, workers=args.workers or default_workers(options))
    try:
        return (serve_workers if options.workers > 1 else serve)(options, on_ready=lambda url: print(
            f"registry serving {url} (storage {args.storage or args.root}"
            + (f", {options.workers} workers)" if options.workers > 1 else ")"), flush=True))
    except OSError as exc:
        raise DriftlessError(f"cannot listen on {args.listen}: {exc.strerror or exc}",
                             hint="is another registry running there? choose another --listen") from None


def _gc(args: argparse.Namespace) -> int:
    from registry.maintenance import collect_garbage

    storage = _open_storage(args)
    report = collect_garbage(storage, grace_seconds=parse_duration(args.grace), dry_run=args.dry_run,
                             stale_upload_seconds=parse_duration(args.stale_uploads, option="--stale-uploads"),
                             delete_untagged=args.delete_untagged,
                             require_read_only=args.storage is not None)  # shared: replicas must be read-only
    verb = "would delete" if args.dry_run else "deleted"
    for item in report.manifests:
        print(f"{verb} manifest {item}")
    for item in report.links:
        print(f"{verb} blob link {item}")
    for digest, size in report.blobs:
        print(f"{verb} blob {digest} ({size} bytes)")
    for item in report.uploads:
        print(f"{verb} abandoned upload session {item}")
    if not args.dry_run:
        storage.clean_temp(older_than=parse_duration(args.grace))
    print(
        f"gc: {verb} {len(report.blobs)} blobs ({report.freed_bytes} bytes), {len(report.manifests)} manifests, "
        f"{len(report.links)} blob links, {len(report.uploads)} abandoned uploads; kept {report.kept_recent} recent items (grace {args.grace})"
    )
    if report.kept_untagged:
        print(f"gc: kept {report.kept_untagged} untagged manifests (pinned digests stay pullable; "
              "--delete-untagged deletes them)")
    return 0


def _fsck(args: argparse.Namespace) -> int:
    from registry.maintenance import check_storage

    storage = _open_storage(args)
    report = check_storage(storage)
    for digest in report.corrupt:
        print(f"corrupt blob {digest}: content does not match its digest; moved to quarantine/")
    for item in report.missing:
        print(f"missing {item}")
    print(f"fsck: checked {report.checked} blobs; {len(report.corrupt)} corrupt, {len(report.missing)} missing references")
    return 0 if report.ok else 1
