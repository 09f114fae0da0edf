"""wasi:http/proxy component in Python (componentize-py), for tests and examples.

GET /              200 "hello from python: <GREETING>"
GET /config/<key>  200 with the wasi:config/store value of <key>, 404 when absent
GET /call?url=U    outbound wasi:http GET of U (http or https), 200 "via python: <upstream body>"
GET /env           200 the environment as a JSON object
else               404

Environment and config are read per request through the WASI imports: os.environ is a snapshot taken when
componentize-py pre-initialised the module at build time, not the serving host's environment.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import environment, outgoing_handler, store, streams, types

WRITE_CHUNK = 4096  # blocking-write-and-flush accepts at most 4096 bytes per call


def _env() -> dict[str, str]:
    return dict(environment.get_environment())


def _fetch(url: str) -> tuple[int, bytes]:
    """GET `url` through wasi:http/outgoing-handler: (status, body)."""
    parts = urlsplit(url)
    request = types.OutgoingRequest(types.Fields.from_list([]))
    request.set_method(types.Method_Get())
    request.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    future = outgoing_handler.handle(request, None)
    pollable = future.subscribe()
    pollable.block()
    pollable.__exit__(None, None, None)
    outcome = future.get()
    future.__exit__(None, None, None)
    if outcome is None or isinstance(outcome, Err):
        raise RuntimeError("outgoing request: no response")
    if isinstance(outcome.value, Err):
        raise RuntimeError(f"outgoing request failed: {outcome.value.value}")
    response = outcome.value.value
    status = response.status()
    body = response.consume()
    stream = body.stream()
    chunks: list[bytes] = []
    while True:
        try:
            chunks.append(stream.blocking_read(65536))
        except Err as err:
            if isinstance(err.value, streams.StreamError_Closed):
                break
            raise
    stream.__exit__(None, None, None)
    types.IncomingBody.finish(body)
    response.__exit__(None, None, None)
    return status, b"".join(chunks)


def _route(method: types.Method, path_with_query: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    parts = urlsplit(path_with_query)
    text = "text/plain; charset=utf-8"
    if not isinstance(method, types.Method_Get):
        return 405, text, b"method not allowed\n"
    if parts.path == "/":
        return 200, text, f"hello from python: {_env().get('GREETING', '')}".encode()
    if parts.path == "/env":
        return 200, "application/json", json.dumps(_env(), sort_keys=True).encode()
    if parts.path.startswith("/config/"):
        key = unquote(parts.path[len("/config/") :])
        try:
            value = store.get(key)
        except Err as err:
            return 500, text, f"config error: {err.value}\n".encode()
        if value is None:
            return 404, text, f"no config key {key!r}\n".encode()
        return 200, text, value.encode()
    if parts.path == "/call":
        url = parse_qs(parts.query).get("url", [""])[0]
        if not url:
            return 400, text, b"missing ?url=\n"
        try:
            status, body = _fetch(url)
        except Exception as exc:  # noqa: BLE001 - any failure of the call is the answer
            return 502, text, f"via python: error: {exc}\n".encode()
        return (200 if status < 400 else 502), text, b"via python: " + body
    return 404, text, b"not found\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        method = request.method()
        path_with_query = request.path_with_query() or "/"
        # behind a Driftless host the app may be mounted under a route: route on the path below it
        info = [v for k, v in request.headers().entries() if k == "x-driftless-path-info"]
        if info:
            query = urlsplit(path_with_query).query
            path_with_query = info[0].decode() + (f"?{query}" if query and "?" not in info[0].decode() else "")
        request.__exit__(None, None, None)
        status, content_type, payload = _route(method, path_with_query)
        headers = types.Fields.from_list([("content-type", content_type.encode())])
        response = types.OutgoingResponse(headers)
        response.set_status_code(status)
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        for start in range(0, len(payload), WRITE_CHUNK):
            stream.blocking_write_and_flush(payload[start : start + WRITE_CHUNK])
        stream.__exit__(None, None, None)
        types.OutgoingBody.finish(body, None)
