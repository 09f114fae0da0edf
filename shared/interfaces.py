"""Names of the WIT interfaces the platform itself knows, written once for every layer.

A component's world is read from what it exports: ``wasi:http/incoming-handler`` (the standard
``wasi:http/proxy`` world, served by ``wasmtime serve``), ``wasi:cli/run`` (``wasi:cli/command``:
a job), or our own ``driftless:http/handler`` (served in-process).
"""

from __future__ import annotations

WASI_HTTP_HANDLER = "wasi:http/incoming-handler"
WASI_HTTP_OUTGOING = "wasi:http/outgoing-handler"  # what a component imports to send HTTP
WASI_CLI_RUN = "wasi:cli/run"
WASI_CONFIG_STORE = "wasi:config/store"
DRIFTLESS_HTTP_HANDLER = "driftless:http/handler"
DRIFTLESS_HTTP_CONFIG = "driftless:http/config"
DRIFTLESS_HTTP_LOG = "driftless:http/log"

# granted to in-process components even in strict mode (a capabilities list): stream plumbing, and
# stdout/stderr, which only reach the host's log
ALWAYS_ALLOWED_WASI = frozenset({"wasi:io/error", "wasi:io/streams", "wasi:io/poll", "wasi:cli/stdout", "wasi:cli/stderr"})

WORLD_WASI_HTTP = "wasi:http/proxy"
WORLD_WASI_CLI = "wasi:cli/command"
WORLD_DRIFTLESS_HTTP = "driftless:http"


def unversioned(name: str) -> str:
    """``wasi:http/types@0.2.6`` -> ``wasi:http/types``."""
    return name.split("@", 1)[0]
