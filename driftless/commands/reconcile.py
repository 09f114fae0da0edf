"""``driftless reconcile``: watch Git, place components on hosts, converge, heal."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, metavar="URL_OR_PATH", help="Git URL or local repository path holding the manifests")
    p.add_argument("--branch", default="main", metavar="NAME", help="branch to follow (default main)")
    p.add_argument("--path", default="manifests", metavar="DIR", help="manifests folder inside the repository (default manifests)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="HOST:PORT of the API (default 127.0.0.1:8080)")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="state directory (SQLite state, Git mirror)")
    p.add_argument("--registry", required=True, metavar="URL", help="platform registry URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--registry-credentials", type=Path, default=None, metavar="FILE",
                   help="credentials of registries other than the platform's (YAML {host[:port]: {username, password}} "
                        "or a docker config.json; mode 0600); the platform's ($DRIFTLESS_REGISTRY_USER/_PASSWORD) go "
                        "to --registry alone")
    p.add_argument("--token-file", type=Path, required=True, metavar="FILE", help="file holding the join token hosts present")
    p.add_argument("--interval", type=float, default=30.0, metavar="SECONDS", help="Git poll interval in seconds (default 30)")
    p.add_argument("--heartbeat", type=float, default=3.0, metavar="SECONDS",
                   help="host heartbeat in seconds, told to hosts; Lost after 3 missed (default 3)")
    p.add_argument("--webhook-secret-file", type=Path, default=None, metavar="FILE",
                   help="secret for /hooks/github (HMAC), /hooks/gitlab (token) and /hooks/generic (HMAC or bearer)")
    p.add_argument("--users-file", type=Path, default=None, metavar="FILE",
                   help="users of the API (YAML/JSON: name, tokenSha256, role viewer|operator|admin, environments, "
                        "email); re-read when it changes. Writes (promote, rollback, sync) need a user of it")
    p.add_argument("--open-reads", action="store_true",
                   help="serve reads without a credential although users are configured (writes still need one)")
    p.add_argument("--read-token-file", type=Path, default=None, metavar="FILE",
                   help="a bearer token that may read (role viewer); reads are open when neither this nor "
                        "--users-file is given")
    p.add_argument("--history", type=int, default=20, metavar="N", help="applied revisions kept per environment (default 20)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="seconds a converging instance is Pending before it counts as drift (default 10)")
    p.add_argument("--allowed-signers", action="append", default=[], metavar="[ENV=]FILE",
                   help="apply only commits SSH-signed by a key in FILE (git allowed-signers format); "
                        "ENV=FILE: the keys that may change the folder of environment ENV (repeat it per "
                        "environment; a plain FILE covers the environments not named)")
    p.add_argument("--allow-host-takeover", action="store_true",
                   help="let a host registering with the join token take a name held by a host that is not Lost "
                        "(revokes that host's credential; default: refused with 409)")
    p.add_argument("--join-label", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="bound the --token-file join token: a host registering with it may carry label KEY only "
                        "with these values, and no label key not named (repeatable; automatic labels os, arch, "
                        "platform, driftless.dev/version stay free). Default: any labels")
    p.add_argument("--join-environments", default=None, metavar="ENV[,ENV]",
                   help="bound the join token: its hosts serve only these environments (default: every one). "
                        "Admins enroll other hosts with `driftless hosts enroll`")
    p.add_argument("--join-ingress", default=None, metavar="URL",
                   help="bound the join token: its hosts' ingress URL must be under this URL prefix")
    p.add_argument("--notification-secrets-file", type=Path, default=None, help=argparse.SUPPRESS)  # gone: refused
    p.add_argument("--secrets-file", type=Path, default=None, metavar="FILE",
                   help="secrets that config values ({secretRef: NAME}), commit-status tokens and notifications "
                        "reference (YAML NAME: {value: ..., environments: [ENV, ...]}, or NAME: value for every "
                        "environment; mode 0600, refused when group or others may read it); re-read when it changes")
    p.add_argument("--outbound-allow", action="append", default=[], metavar="URL_PREFIX",
                   help="a URL prefix that webhooks and commit-status APIs named in Git may use (repeatable; "
                        "https://api.github.com/ and https://gitlab.com/api/v4/ are always allowed)")
    p.add_argument("--age-identity-file", type=Path, default=None, metavar="FILE",
                   help="age identities (driftless secrets keygen; mode 0600) decrypting config values kept "
                        "encrypted in Git as {age: CIPHERTEXT}; users encrypt to its public key")
    p.add_argument("--state", default=None, metavar="URL",
                   help="postgresql://USER@HOST:PORT/DB: state shared by replicated reconcilers (one leads, the others "
                        "follow and take over); password from PGPASSWORD or ~/.pgpass, never in the URL. "
                        "Default: DATA/state.db (SQLite, one reconciler)")
    p.add_argument("--advertise", default=None, metavar="URL",
                   help="this reconciler's URL as hosts and clients reach it; followers send them to the leader's "
                        "(default from --listen)")
    p.add_argument("--lease", type=float, default=3.0, metavar="SECONDS",
                   help="leader lease with --state postgresql://, renewed every third of it (default 3)")
    p.add_argument("--signature-policy", type=Path, default=None, metavar="FILE",
                   help="per environment, the public keys whose signatures a component needs (YAML: environments: "
                        "{prod: {keys: [ci.pub, release.pub], require: all}}); checked before a revision is applied "
                        "and again by each host before it runs the digest")
    p.add_argument("--tls-cert", type=Path, default=None, metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="private key of --tls-cert (PEM)")


def _secret(path: Path | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from exc
    if not value:
        raise UsageError(f"{option} {path} is empty", hint="write a long random token into it")
    return value


def _no_notification_secrets_file(path: Path | None) -> None:
    if path is not None:  # its secrets had no scope: any environment's Git could name any of them
        raise UsageError("--notification-secrets-file is no longer read: notification secrets come from --secrets-file, "
                         "scoped to the environments whose notifications use them",
                         hint="move each secret to --secrets-file as NAME: {value: \"...\", environments: [ENV]} "
                              "and drop --notification-secrets-file")


def _signers(values: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """--allowed-signers [ENV=]FILE, repeated: (the file for every environment, the file per environment)."""
    every: Path | None = None
    per_env: dict[str, Path] = {}
    for value in values:
        env, sep, file = value.partition("=")
        if not sep or "/" in env or not env:  # a plain FILE (a path may hold '=' only after a '/')
            env, file = "", value
        path = Path(file).expanduser()
        if not path.is_file():
            raise UsageError(f"--allowed-signers {value}: {path} is not a file",
                             hint='one line per key: "<email> ssh-ed25519 AAAA..." (git allowed-signers format)')
        if (env and env in per_env) or (not env and every is not None):
            raise UsageError(f"--allowed-signers {value}: {'environment ' + env if env else 'a plain FILE'} "
                             "is given twice", hint="one file per environment: put every allowed key in it")
        if env:
            per_env[env] = path.resolve()
        else:
            every = path.resolve()
    return every, per_env


def _signature_policy(path: Path | None) -> Path | None:
    if path is None:
        return None
    from shared.signatures import load_policy

    load_policy(path)  # a bad policy (or key file) is a usage error now, not a rejected revision later
    return path.resolve()


def run(args: argparse.Namespace) -> int:
    from reconciler.server import parse_listen, run, tls_context
    from reconciler.settings import Settings

    parse_listen(args.listen)
    if args.interval <= 0 or args.heartbeat <= 0:
        raise UsageError("--interval and --heartbeat must be positive numbers of seconds")
    if args.history < 1:
        raise UsageError("--history must be at least 1")
    signers, env_signers = _signers(args.allowed_signers)
    if args.state is not None:
        from reconciler.controller.state_postgres import check_url

        check_url(args.state)
    if not 0.5 <= args.lease <= 600:
        raise UsageError("--lease must be between 0.5 and 600 seconds")
    token = _secret(args.token_file, "--token-file")
    assert token is not None
    read_token = _secret(args.read_token_file, "--read-token-file")
    if args.open_reads and read_token is not None:
        raise UsageError("--open-reads and --read-token-file contradict each other", hint="choose one")
    users_file = None
    if args.users_file is not None:
        from reconciler.api.auth import load_users

        load_users(args.users_file)  # a bad file is a usage error now, not a locked API later
        users_file = args.users_file.resolve()
    _no_notification_secrets_file(args.notification_secrets_file)
    from reconciler.controller.outbound import OutboundAllowList

    OutboundAllowList(args.outbound_allow)  # a bad prefix is a usage error now
    secrets_file = None
    if args.secrets_file is not None:
        from reconciler.controller.secrets import read_secrets

        read_secrets(args.secrets_file)  # unreadable, not a mapping or group/world readable: refused now
        secrets_file = args.secrets_file.resolve()
    if args.age_identity_file is not None:
        from reconciler.controller.secrets import age_recipients, read_age_identities

        recipients = age_recipients(read_age_identities(args.age_identity_file))  # refused now when unusable
        print(f"driftless reconcile: age recipient(s) for secrets in Git: {', '.join(recipients)}", flush=True)
    from reconciler.controller.enrollment import join_bounds

    try:
        join_bounds(labels=args.join_label, environments=args.join_environments, ingress=args.join_ingress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    registry_credentials = {}
    if args.registry_credentials is not None:
        from shared.registry_auth import load_credentials_file

        registry_credentials = load_credentials_file(args.registry_credentials)  # refused now when unusable
    settings = Settings(
        repo=args.repo,
        data=args.data.resolve(),
        registry=args.registry,
        registry_credentials=registry_credentials,
        token=token,
        branch=args.branch,
        path=args.path.strip("/") or ".",
        interval=args.interval,
        heartbeat=args.heartbeat,
        webhook_secret=_secret(args.webhook_secret_file, "--webhook-secret-file"),
        read_token=read_token,
        users_file=users_file,
        open_reads=args.open_reads,
        history_limit=args.history,
        grace_seconds=args.grace,
        allowed_signers=signers,
        env_signers=env_signers,
        allow_host_takeover=args.allow_host_takeover,
        join_labels=tuple(args.join_label),
        join_environments=args.join_environments,
        join_ingress=args.join_ingress,
        secrets_file=secrets_file,
        age_identity_file=args.age_identity_file.resolve() if args.age_identity_file is not None else None,
        outbound_allow=tuple(args.outbound_allow),
        state=args.state,
        advertise_url=args.advertise.rstrip("/") if args.advertise else None,
        lease_seconds=args.lease,
        signature_policy=_signature_policy(args.signature_policy),
    )
    return run(settings, listen=args.listen, ssl_context=tls_context(args.tls_cert, args.tls_key))
