"""Real Wasm for the registry tests, compiled from WAT with ``wasmtime.wat2wasm``."""

from __future__ import annotations

import functools

# imports the interface driftless:demo/host, exports driftless:demo/greeter (memory in its own core module)
GREETER_WAT = """
(component
  (import "driftless:demo/host" (instance $host
    (export "log" (func (param "msg" string)))))
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (local.get $p) (local.get $nsz)))
      (local.get $p)))
  (core instance $mem (instantiate $Mem))
  (alias export $host "log" (func $log))
  (core func $log_lower (canon lower (func $log) (memory (core memory $mem "memory"))))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "host" "log" (func $log (param i32 i32)))
    (func (export "greet") (param $ptr i32) (param $len i32) (result i32)
      (call $log (local.get $ptr) (local.get $len))
      (i32.store (i32.const 8) (local.get $ptr))
      (i32.store (i32.const 12) (local.get $len))
      (i32.const 8)))
  (core instance $main (instantiate $Main
    (with "env" (instance (export "memory" (memory $mem "memory"))))
    (with "host" (instance (export "log" (func $log_lower))))))
  (func $greet (param "name" string) (result string)
    (canon lift (core func $main "greet") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (instance $g (export "greet" (func $greet)))
  (export "driftless:demo/greeter" (instance $g))
)
"""

# a plain function export, no imports
HELLO_WAT = """
(component
  (core module $M (func (export "answer") (result i32) (i32.const 42)))
  (core instance $m (instantiate $M))
  (func (export "answer") (result u32) (canon lift (core func $m "answer")))
)
"""

# valid structure, but a function body that does not type-check (only full validation catches it)
BAD_BODY_WAT = """
(component
  (core module $M (func (export "answer") (result i32) (i64.const 42)))
  (core instance $m (instantiate $M))
  (func (export "answer") (result u32) (canon lift (core func $m "answer")))
)
"""

MODULE_WAT = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
"""


@functools.cache
def greeter() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(GREETER_WAT))


@functools.cache
def hello() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(HELLO_WAT))


@functools.cache
def core_module() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(MODULE_WAT))


@functools.cache
def bad_body() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(BAD_BODY_WAT))
