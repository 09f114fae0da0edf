"""Settings of one reconciler (what ``driftless reconcile`` options map to)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.registry_auth import RegistryAuth
from shared.registry_client import Credentials


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    repo: str  # Git URL or local repository path
    data: Path  # state.db, git mirror
    registry: str  # platform registry URL, e.g. "http://127.0.0.1:5000"
    token: str  # join token hosts present as "Authorization: Bearer ..."
    branch: str = "main"
    path: str = "manifests"  # manifests folder inside the repository
    interval: float = 30.0  # Git poll interval, seconds
    heartbeat: float = 3.0  # told to hosts at registration; Lost after `lost_after` missed heartbeats
    lost_after: int = 3
    webhook_secret: str | None = None  # GitHub HMAC / GitLab token / generic HMAC
    read_token: str | None = None  # when set, read endpoints require it (or the join token)
    users_file: Path | None = None  # users, roles and token hashes (reconciler/api/auth.py); re-read when it changes
    open_reads: bool = False  # reads without a credential even with users or a read token
    history_limit: int = 20  # applied revisions kept per environment
    grace_seconds: float = 10.0  # converging instances are Pending (not drift) this long
    long_poll_max: float = 60.0  # cap on ?wait= of the desired-state long-poll
    allowed_signers: Path | None = None  # when set, only commits SSH-signed by these keys are applied
    # per environment (--allowed-signers ENV=FILE): the keys that may change that environment's folder;
    # an environment not named here falls back to allowed_signers (controller/evaluation.py)
    env_signers: Mapping[str, Path] = field(default_factory=dict)
    allow_host_takeover: bool = False  # a join-token registration may take a name held by a live host
    # the join token's bounds (controller/enrollment.py join_bounds): --join-label KEY=V1,V2 (repeated),
    # --join-environments dev,staging, --join-ingress URL-prefix; none given: unbounded (driftless up)
    join_labels: tuple[str, ...] = ()
    join_environments: str | None = None
    join_ingress: str | None = None
    secrets_file: Path | None = None  # YAML {name: {value, environments}}, mode 0600; re-read when it changes (controller/secrets.py)
    age_identity_file: Path | None = None  # age X25519 identities (0600) decrypting {age: ...} config values
    # URL prefixes Git may name for webhooks and commit-status APIs, besides the public GitHub and GitLab
    # APIs (reconciler/controller/outbound.py)
    outbound_allow: tuple[str, ...] = ()
    state: str | None = None  # postgresql://... (no password): state shared by replicated reconcilers; None: DATA/state.db
    advertise_url: str | None = None  # this reconciler's URL as hosts and clients reach it (a follower names the leader's)
    lease_seconds: float = 3.0  # the leader lease on a shared state (renewed every third of it)
    signature_policy: Path | None = None  # per environment, the keys whose signatures a digest needs (shared.signatures)
    # --registry-credentials: host[:port] -> the credential of a registry other than the platform's
    registry_credentials: Mapping[str, Credentials] = field(default_factory=dict)

    def registry_auth(self) -> RegistryAuth:
        """Which credential the reconciler sends to which registry: the platform's (``DRIFTLESS_REGISTRY_USER``
        / ``..._PASSWORD``) to ``registry`` alone, a --registry-credentials entry to its registry, else none."""
        platform = self.registry if "://" in self.registry else f"http://{self.registry}"
        return RegistryAuth(platform=platform, platform_credentials=Credentials.from_env(),
                            configured=self.registry_credentials)
