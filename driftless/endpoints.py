"""Where the platform runs: ``DATA/up.json`` written by ``driftless up``.

The CLI's client commands (status, drift, promote, ...) default ``--control`` and ``--registry``
from it. The data directory is ``--data``, else ``$DRIFTLESS_DATA``, else ``~/.driftless``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def default_data_dir() -> Path:
    return Path(os.environ.get("DRIFTLESS_DATA") or Path.home() / ".driftless")


def load_up_json(data_dir: Path | None = None) -> dict[str, Any]:
    path = (data_dir or default_data_dir()) / "up.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def default_control_url() -> str:
    return os.environ.get("DRIFTLESS_CONTROL") or load_up_json().get("reconciler") or "http://127.0.0.1:8080"


def default_registry_url() -> str:
    return os.environ.get("DRIFTLESS_REGISTRY") or load_up_json().get("registry") or "http://127.0.0.1:5000"


def default_git_remote() -> str | None:
    return os.environ.get("DRIFTLESS_REPO") or load_up_json().get("git")


def sign_in_link(control_url: str, token: str) -> str:
    """The dashboard's one-click sign-in: the credential rides in the URL fragment (``#token=``), which
    the browser never sends to a server (so no access log holds it); the page stores it and removes it
    from the address bar (reconciler/api/static/app.js)."""
    from urllib.parse import quote

    return f"{control_url.split(',')[0].rstrip('/')}/#token={quote(token, safe='')}"
