"""The registry server's options (``driftless registry serve`` flags), shared by the handler and the wiring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServerOptions:
    root: Path
    host: str = "127.0.0.1"
    port: int = 5000
    htpasswd: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    read_only: bool = False
    anonymous_pull: bool = False
    access_policy: Path | None = None  # per-repository access control (registry.access); YAML or JSON
    auth_failure_limit: int = 10  # failed logins per user and address per minute before 429 (0: no limit)
    auth_cache_seconds: float = 60.0  # how long a successful password check is remembered
    storage: str | None = None  # s3://bucket/prefix: an S3 bucket instead of the filesystem under root
    s3_endpoint: str | None = None  # with storage: the S3 API's URL (MinIO, SeaweedFS); None: AWS
    cache_ttl: float | None = None  # seconds other processes' changes may go unseen (registry.caches); None: default
    workers: int = 1  # serving processes on the port (registry.workers); 0: one per CPU
