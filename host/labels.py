"""Automatic host labels and capacity: what the reconciler places by."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

from shared import __version__

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_kubernetes() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) or os.path.isdir(SERVICE_ACCOUNT_DIR)


def automatic_labels() -> dict[str, str]:
    labels = {
        "os": platform.system().lower(),
        "arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower()),
        "driftless.dev/version": __version__,
    }
    if in_kubernetes():
        labels["platform"] = "kubernetes"
    return labels


def host_labels(user: Mapping[str, str]) -> dict[str, str]:
    """Automatic labels, overridden by the user's ``--label`` values."""
    return {**automatic_labels(), **user}


def total_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
