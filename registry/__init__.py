"""Driftless's OCI registry: Distribution Spec v1.1, Wasm-aware, crash-safe.

    registry.server       HTTP server: start and stop it (serve, serve_in_thread, start, ServerOptions)
    registry.handler      the request handler: routes, who may do what, requests -> store calls
    registry.transfer     bytes between network and storage (streamed uploads, threaded sendfile)
    registry.options      ServerOptions (the serve flags)
    shared.registry_client       synchronous client (push_component, resolve, fetch_manifest, fetch_blob, component_info)
    shared.wasm         inspect_wasm(bytes) -> kind, imports, exports, worlds (wasm-tools)
    registry.store        the content model over a storage driver (blobs, uploads, manifests, tags, referrers)
    registry.storage      the Storage protocol and its drivers (filesystem, memory)
    registry.layout       where everything lives in storage
    registry.maintenance  gc and fsck
    registry.access       per-repository access control (--access-policy): who may pull, push, delete
    registry.auth         htpasswd basic auth: bcrypt off the event loop, cached, failed logins rate-limited
    registry.errors       the OCI error codes, in one table

User documentation: docs/registry.md.
"""
