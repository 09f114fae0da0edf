"""The outbound policy's decisions, one by one: the adapter's real core module
(host/adapters/outbound-policy.wat with the rules host/outbound.py bakes in), run by wasmtime-py,
its wasi:http imports answered by the test (the request's scheme and authority, and a recorder
standing in for the real outgoing-handler). test_outbound.py runs it composed into real components
under ``wasmtime serve``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import wasmtime

from host.compose import ComposeError
from host.outbound import OutboundPolicy, Rule, adapter_wat
from wire.control import InstanceGrants, InstanceLink, InstanceSpec

GRANTS = ("api.example.com", "127.0.0.1:8080", "*.example.org", "any.example.net:*", "169.254.169.254")
HTTP, HTTPS, UNSET = 0, 1, None  # wasi:http scheme cases; None: the guest set no scheme
AUTHORITY_AT = 50_000  # where the test writes the authority (the adapter's heap is far below)
DENIED = 15  # error-code.HTTP-request-denied


@dataclass
class Sandbox:
    """One instantiated adapter and what reached its imports."""

    store: wasmtime.Store
    instance: wasmtime.Instance
    request: dict[int, tuple[int | str | None, str | None]] = field(default_factory=dict)
    sent: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def memory(self) -> wasmtime.Memory:
        memory = self.instance.exports(self.store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return memory

    def decide(self, scheme: int | str | None, authority: str | None) -> bool:
        """True when the adapter passed the request on to the real handler."""
        handle = len(self.request) + 1
        self.request[handle] = (scheme, authority)
        export = self.instance.exports(self.store)["wasi:http/outgoing-handler@0.2.6#handle"]
        assert isinstance(export, wasmtime.Func)
        at = export(self.store, handle, 0, 0)
        result = self.memory().read(self.store, at, at + 9)
        post_return = self.instance.exports(self.store)["cabi_post_wasi:http/outgoing-handler@0.2.6#handle"]
        assert isinstance(post_return, wasmtime.Func)
        post_return(self.store, at)
        if result[0] == 0:
            assert self.sent[-1:] == [handle] and handle not in self.dropped
            return True
        assert result[8] == DENIED and handle in self.dropped and handle not in self.sent
        assert self.stderr[-1].startswith("outbound HTTP to ")
        assert self.stderr[-1].endswith(" refused: not in grants.outboundHosts (nor a link)\n")
        return False


def sandbox(policy: OutboundPolicy) -> Sandbox:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, adapter_wat(rules=policy.encode()))
    linker = wasmtime.Linker(engine)
    box: Sandbox
    i32 = wasmtime.ValType.i32()

    def scheme(caller: wasmtime.Caller, handle: int, ret: int) -> None:
        value = box.request[handle][0]
        memory = box.memory()
        if value is None:
            memory.write(caller, bytes([0]), ret)
        elif isinstance(value, str):  # other(string): the string itself does not matter to the policy
            memory.write(caller, bytes([1, 0, 0, 0, 2]), ret)
        else:
            memory.write(caller, bytes([1, 0, 0, 0, value]), ret)

    def authority(caller: wasmtime.Caller, handle: int, ret: int) -> None:
        value = box.request[handle][1]
        memory = box.memory()
        if value is None:
            memory.write(caller, bytes([0]), ret)
            return
        data = value.encode()
        memory.write(caller, data, AUTHORITY_AT)
        memory.write(caller, bytes([1, 0, 0, 0]) + AUTHORITY_AT.to_bytes(4, "little") + len(data).to_bytes(4, "little"),
                     ret)

    def send(caller: wasmtime.Caller, handle: int, _has_options: int, _options: int, ret: int) -> None:
        box.sent.append(handle)
        box.memory().write(caller, bytes(8) + (77).to_bytes(4, "little"), ret)

    def write(caller: wasmtime.Caller, _stream: int, ptr: int, length: int, ret: int) -> None:
        box.stderr.append(box.memory().read(caller, ptr, ptr + length).decode())
        box.memory().write(caller, bytes([0]), ret)

    linker.define_func("wasi:cli/stderr@0.2.6", "get-stderr", wasmtime.FuncType([], [i32]), lambda: 5)
    linker.define_func("wasi:io/streams@0.2.6", "[method]output-stream.blocking-write-and-flush",
                       wasmtime.FuncType([i32] * 4, []), write, access_caller=True)
    linker.define_func("wasi:io/streams@0.2.6", "[resource-drop]output-stream", wasmtime.FuncType([i32], []),
                       lambda handle: None)
    linker.define_func("wasi:io/error@0.2.6", "[resource-drop]error", wasmtime.FuncType([i32], []), lambda handle: None)
    types, handler = "wasi:http/types@0.2.6", "wasi:http/outgoing-handler@0.2.6"
    two = wasmtime.FuncType([i32, i32], [])
    linker.define_func(types, "[method]outgoing-request.scheme", two, scheme, access_caller=True)
    linker.define_func(types, "[method]outgoing-request.authority", two, authority, access_caller=True)
    linker.define_func(types, "[resource-drop]outgoing-request", wasmtime.FuncType([i32], []),
                       lambda handle: box.dropped.append(handle))
    linker.define_func(types, "[resource-drop]request-options", wasmtime.FuncType([i32], []), lambda handle: None)
    linker.define_func(handler, "handle", wasmtime.FuncType([i32] * 4, []), send, access_caller=True)
    box = Sandbox(store, linker.instantiate(store, module))
    return box


@pytest.fixture(scope="module")
def granted() -> Sandbox:
    return sandbox(OutboundPolicy(tuple(Rule.parse(g) for g in GRANTS)))


@pytest.mark.parametrize(("scheme", "authority", "allowed"), [
    (HTTPS, "api.example.com", True),
    (HTTP, "api.example.com", True),
    (UNSET, "api.example.com", True),  # wasmtime sends https when the guest sets no scheme
    (HTTPS, "api.example.com:443", True),
    (HTTPS, "API.Example.COM", True),  # host names are case-insensitive
    (HTTP, "api.example.com:443", False),  # no port granted: only the port the scheme implies
    (HTTPS, "api.example.com:8443", False),
    (HTTPS, "api.example.com.evil.net", False),
    (HTTPS, "xapi.example.com", False),
    (HTTPS, "user@api.example.com", False),  # userinfo: the connection would not go where it reads
    (HTTPS, "api.example.com%2e", False),
    (HTTPS, "api.example.com.", False),
    (HTTP, "127.0.0.1:8080", True),
    (HTTP, "127.0.0.1:8081", False),  # the same host, another port
    (HTTP, "127.0.0.1", False),
    (HTTP, "localhost:8080", False),  # the same server under another name
    (HTTP, "127.0.0.1:", False),
    (HTTP, "127.0.0.1:99999", False),
    (HTTP, "127.0.0.1:8080:1", False),
    (HTTPS, "a.example.org", True),
    (HTTPS, "deep.a.example.org", True),
    (HTTPS, "example.org", False),  # *.example.org names what is below it
    (HTTPS, ".example.org", False),
    (HTTP, "any.example.net:1234", True),
    (HTTP, "169.254.169.254", True),  # the metadata address, granted as written
    (HTTP, "169.254.169.254:8080", False),
    (HTTP, "169.254.170.2", False),
    (HTTP, "2852039166", False),  # 169.254.169.254 spelled as one number
    (HTTP, "0xa9.0xfe.0xa9.0xfe", False),
    (HTTP, "[fe80::1]", False),
    (HTTP, "[fd00:ec2::254]:80", False),
    (HTTP, "", False),
    (HTTP, None, False),
    ("ftp", "api.example.com", False),  # only http and https
])  # fmt: skip
def test_the_policy_allows_only_what_is_granted(granted: Sandbox, scheme: int | str | None, authority: str | None,
                                               allowed: bool) -> None:
    assert granted.decide(scheme, authority) is allowed


def test_nothing_granted_refuses_everything() -> None:
    box = sandbox(OutboundPolicy())
    for authority in ("api.example.com", "127.0.0.1:8080", "169.254.169.254", "localhost"):
        assert box.decide(HTTP, authority) is False
    assert box.sent == []


def test_each_refusal_is_logged_with_the_authority_made_harmless() -> None:
    box = sandbox(OutboundPolicy())
    box.decide(HTTP, "169.254.169.254")
    assert box.stderr[-1] == "outbound HTTP to 169.254.169.254 refused: not in grants.outboundHosts (nor a link)\n"
    box.decide(HTTP, "EVIL.example\r\nforged: line")  # no line of the guest's making reaches the host's log
    assert box.stderr[-1].startswith("outbound HTTP to evil.example??forged:?line refused")
    box.decide(HTTP, "a" * 1000)
    assert box.stderr[-1] == f"outbound HTTP to {'a' * 256} refused: not in grants.outboundHosts (nor a link)\n"
    box.decide(HTTP, None)
    assert box.stderr[-1] == "outbound HTTP to  refused: not in grants.outboundHosts (nor a link)\n"


def test_a_wildcard_never_matches_an_address() -> None:
    box = sandbox(OutboundPolicy((Rule.parse("*.169.254"), Rule.parse("*.0xfe"))))
    assert box.decide(HTTP, "169.254.169.254") is False
    assert box.decide(HTTP, "0xa9.0xfe.0xa9.0xfe") is False
    assert box.decide(HTTP, "metadata.169.254") is False  # a name whose last label is a number reads as an address


def test_http_links_add_the_hosts_ingress_and_nothing_else() -> None:
    link = InstanceLink(to_component="api", interface="wasi:http/incoming-handler@0.2.0")
    spec = InstanceSpec(id="dev/demo/web/0", env="dev", app="demo", component="web", image="x", digest="sha256:0",
                        links=(link,), grants=InstanceGrants(outbound_hosts=("api.example.com",)))
    policy = OutboundPolicy.of(spec, links_base="http://127.0.0.1:9999")
    assert policy.describe() == "api.example.com, 127.0.0.1:9999"
    box = sandbox(policy)
    assert box.decide(HTTP, "127.0.0.1:9999") is True
    assert box.decide(HTTP, "127.0.0.1:9998") is False
    v6 = sandbox(OutboundPolicy.of(spec, links_base="http://[::1]:9999"))
    assert v6.decide(HTTP, "[::1]:9999") is True
    assert v6.decide(HTTP, "[::1]:9998") is False
    unlinked = OutboundPolicy.of(InstanceSpec(id="dev/demo/web/0", env="dev", app="demo", component="web", image="x",
                                              digest="sha256:0"), links_base="http://127.0.0.1:9999")
    assert unlinked.rules == ()


@pytest.mark.parametrize("entry", ["api.example.com:99999", "*", "api.*.com", "http://api.example.com", "a b"])
def test_an_entry_that_is_not_a_host_is_refused_by_name(entry: str) -> None:
    with pytest.raises(ComposeError, match="grants.outboundHosts entry"):
        Rule.parse(entry)
