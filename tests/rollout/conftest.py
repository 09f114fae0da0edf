"""Canary rollout tests: the host tests' registry fixture, and components that misbehave on purpose."""

from __future__ import annotations

import functools

import wasmtime

from tests.host.conftest import registry  # noqa: F401  (a real registry on loopback, session-wide)
from tests.support.components import SOURCES

HELLO_STATUS = "(i32.store16 (i32.const 96) (i32.const 200))"
# 500 when the request path ends in 0, 1 or 2: ~30% of /x/0 ... /x/99, deterministic per path
FLAKY_STATUS = ("(i32.store16 (i32.const 96) (select (i32.const 500) (i32.const 200) (i32.lt_u (i32.sub "
                "(i32.load8_u (i32.add (local.get 2) (i32.sub (local.get 3) (i32.const 1)))) (i32.const 48)) "
                "(i32.const 3))))")
HELLO_LOCALS = "(local $gptr i32) (local $glen i32) (local $out i32) (local $n i32)"
# the same answer, after a loop of 20,000 iterations: far more fuel per request, still well under a millisecond
BURNER_LOCALS = (HELLO_LOCALS + " (local $i i32) (local.set $i (i32.const 20000)) (loop $burn (local.set $i "
                 "(i32.sub (local.get $i) (i32.const 1))) (br_if $burn (local.get $i)))")


@functools.cache
def hello_variant(kind: str) -> bytes:
    """The hello example (driftless:http), changed: ``flaky`` answers 500 to paths ending in 0-2;
    ``shouty`` says " FROM " instead of " from " (another body, the same status); ``burner`` answers
    the same after a busy loop (much more fuel per request); any other kind is hello with another digest."""
    source = (SOURCES / "hello.wat").read_text()
    assert HELLO_STATUS in source and '" from "' in source and HELLO_LOCALS in source
    if kind == "flaky":
        source = source.replace(HELLO_STATUS, FLAKY_STATUS)
    elif kind == "burner":
        source = source.replace(HELLO_LOCALS, BURNER_LOCALS)
    elif kind == "shouty":
        source = source.replace('" from "', '" FROM "')
    else:
        source = source.replace(";; hello:", f";; hello ({kind}):") + f"\n(;{kind};)"
        return bytes(wasmtime.wat2wasm(source)) + _custom_section(kind)
    return bytes(wasmtime.wat2wasm(source))


def _custom_section(label: str) -> bytes:
    from tests.support.components import _leb128

    name = b"driftless-variant"
    payload = _leb128(len(name)) + name + label.encode()
    return b"\x00" + _leb128(len(payload)) + payload
