"""WASI imports are linked and limited by grants (config reaches WASI programs as environment; a
capabilities list is strict), and command components (`wasi:cli/run`) run as jobs."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.support.procs import wait_until

# an HTTP handler that imports wasi:cli/environment and answers with the first variable's value
ENV_HANDLER = r"""
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-environment" (func (result (list (tuple string string)))))))
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $p) (local.get $nsz)))
      (local.get $p))
    (func (export "reset") (param i32) (global.set $heap (i32.const 1024))))
  (core instance $mem (instantiate $Mem))
  (alias export $env "get-environment" (func $getenv))
  (core func $getenv_lower (canon lower (func $getenv) (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "wasi" "get-environment" (func $getenv (param i32)))
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $elem i32)
      (call $getenv (i32.const 64))
      (local.set $elem (i32.load (i32.const 64)))
      (i32.store16 (i32.const 96) (i32.const 200))
      (i32.store (i32.const 100) (i32.const 0)) (i32.store (i32.const 104) (i32.const 0))
      (i32.store (i32.const 108) (i32.load (i32.add (local.get $elem) (i32.const 8))))
      (i32.store (i32.const 112) (i32.load (i32.add (local.get $elem) (i32.const 12))))
      (i32.const 96)))
  (core instance $main (instantiate $Main
    (with "env" (instance $mem))
    (with "wasi" (instance (export "get-environment" (func $getenv_lower))))))
  (type $header (tuple string string))
  (type $request (record (field "method" string) (field "path" string) (field "headers" (list $header)) (field "body" (list u8))))
  (type $response (record (field "status" u16) (field "headers" (list $header)) (field "body" (list u8))))
  (func $handle (param "req" $request) (result $response)
    (canon lift (core func $main "handle") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))
                (post-return (core func $mem "reset"))))
  (instance $handler (export "request" (type $request)) (export "response" (type $response)) (export "handle" (func $handle)))
  (export "driftless:http/handler@0.1.0" (instance $handler))
)
"""


def test_wasi_imports_are_linked_config_is_the_environment_and_a_capability_list_is_strict(
    tmp_path: Path, registry: Registry
) -> None:
    image = registry.push("envhandler", wasmtime.wat2wasm(ENV_HANDLER))
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [
            # grants model: nothing to list, the environment is exactly the component's config
            instance(image, component="granted", route="/granted", config={"MOTTO": "from the manifest"}),
            # strict mode: a capabilities list that leaves out wasi:cli/environment refuses it
            instance(image, component="strict", route="/strict", config={"SECRET": "x"},
                     capabilities=["wasi:clocks/wall-clock"]),  # fmt: skip
        ],
    )
    with start_host(tmp_path, "--desired", str(desired)) as host:
        denied = host.wait_status("dev/demo/strict/0", "Failed")
        assert "imports wasi:cli/environment@0.2.0, which its manifest does not allow" in denied["lastError"]
        assert "add wasi:cli/environment to the component's capabilities" in denied["lastError"]
        host.wait_status("dev/demo/granted/0", "Running")
        r = host.get("/granted")
        assert (r.status_code, r.text) == (200, "from the manifest")


def test_a_command_component_runs_as_a_job(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["job"], component="job")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        status = host.wait_status("dev/demo/job/0", "Completed")
        assert "lastError" not in status  # the report leaves out empty fields
        assert "job dev/demo/job/0 completed" in host.proc.log()


# an HTTP handler that logs its request path through driftless:http/log and answers 204
LOG_HANDLER = r"""
(component
  (import "driftless:http/log@0.1.0" (instance $log (export "log" (func (param "message" string)))))
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $p) (local.get $nsz)))
      (local.get $p))
    (func (export "reset") (param i32) (global.set $heap (i32.const 1024))))
  (core instance $mem (instantiate $Mem))
  (alias export $log "log" (func $logf))
  (core func $log_lower (canon lower (func $logf) (memory (core memory $mem "memory"))))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "host" "log" (func $log (param i32 i32)))
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (call $log (local.get 2) (local.get 3))
      (i32.store16 (i32.const 96) (i32.const 204))
      (i32.store (i32.const 100) (i32.const 0)) (i32.store (i32.const 104) (i32.const 0))
      (i32.store (i32.const 108) (i32.const 0)) (i32.store (i32.const 112) (i32.const 0))
      (i32.const 96)))
  (core instance $main (instantiate $Main
    (with "env" (instance $mem))
    (with "host" (instance (export "log" (func $log_lower))))))
  (type $header (tuple string string))
  (type $request (record (field "method" string) (field "path" string) (field "headers" (list $header)) (field "body" (list u8))))
  (type $response (record (field "status" u16) (field "headers" (list $header)) (field "body" (list u8))))
  (func $handle (param "req" $request) (result $response)
    (canon lift (core func $main "handle") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))
                (post-return (core func $mem "reset"))))
  (instance $handler (export "request" (type $request)) (export "response" (type $response)) (export "handle" (func $handle)))
  (export "driftless:http/handler@0.1.0" (instance $handler))
)
"""


def test_component_log_lines_are_tagged_and_capacity_is_enforced(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    image = registry.push("logger", wasmtime.wat2wasm(LOG_HANDLER))
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [
            instance(image, component="logger", route="/log"),
            instance(images["hello"], component="web", route="/hello"),
            instance(images["hello"], component="extra", route="/extra"),
        ],
    )
    with start_host(tmp_path, "--desired", str(desired), "--max-instances", "2") as host:
        host.wait_status("dev/demo/logger/0", "Running")
        host.wait_status("dev/demo/web/0", "Running")
        full = host.wait_status("dev/demo/extra/0", "Failed")
        assert "capacity of 2 instances is full" in full["lastError"]
        assert host.get("/log/some/where").status_code == 204
        wait_until(lambda: "[dev/demo/logger] /log/some/where" in host.proc.log(), timeout=5, what="tagged log line")


# an HTTP handler that writes a line to WASI stdout (wasi:cli/stdout + wasi:io/streams) and answers 204
STDOUT_HANDLER = r"""
(component $C
  (import "wasi:io/error@0.2.0" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $C $error (type $err0))
    (export "error" (type $e (eq $err0)))
    (type $stream-error (variant (case "last-operation-failed" (own $e)) (case "closed")))
    (export "stream-error" (type $se (eq $stream-error)))
    (export "output-stream" (type $os (sub resource)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $se)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $C $output-stream (type $os0))
    (export "output-stream" (type $os (eq $os0)))
    (export "get-stdout" (func (result (own $os))))))
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $p) (local.get $nsz)))
      (local.get $p))
    (func (export "reset") (param i32) (global.set $heap (i32.const 1024))))
  (core instance $mem (instantiate $Mem))
  (alias export $stdout "get-stdout" (func $get-stdout))
  (alias export $streams "[method]output-stream.blocking-write-and-flush" (func $write))
  (core func $get-stdout-lower (canon lower (func $get-stdout)))
  (core func $write-lower (canon lower (func $write) (memory (core memory $mem "memory"))))
  (core func $drop (canon resource.drop $output-stream))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "wasi" "get-stdout" (func $get-stdout (result i32)))
    (import "wasi" "write" (func $write (param i32 i32 i32 i32)))
    (import "wasi" "drop" (func $drop (param i32)))
    (data (i32.const 16) "printed to stdout\n")
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $out i32)
      (local.set $out (call $get-stdout))
      (call $write (local.get $out) (i32.const 16) (i32.const 18) (i32.const 64))
      (call $drop (local.get $out))
      (i32.store16 (i32.const 96) (i32.const 204))
      (i32.store (i32.const 100) (i32.const 0)) (i32.store (i32.const 104) (i32.const 0))
      (i32.store (i32.const 108) (i32.const 0)) (i32.store (i32.const 112) (i32.const 0))
      (i32.const 96)))
  (core instance $main (instantiate $Main
    (with "env" (instance $mem))
    (with "wasi" (instance (export "get-stdout" (func $get-stdout-lower)) (export "write" (func $write-lower)) (export "drop" (func $drop))))))
  (type $header (tuple string string))
  (type $request (record (field "method" string) (field "path" string) (field "headers" (list $header)) (field "body" (list u8))))
  (type $response (record (field "status" u16) (field "headers" (list $header)) (field "body" (list u8))))
  (func $handle (param "req" $request) (result $response)
    (canon lift (core func $main "handle") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))
                (post-return (core func $mem "reset"))))
  (instance $handler (export "request" (type $request)) (export "response" (type $response)) (export "handle" (func $handle)))
  (export "driftless:http/handler@0.1.0" (instance $handler))
)
"""


def test_wasi_stdout_reaches_the_host_log_tagged_without_a_capability(tmp_path: Path, registry: Registry) -> None:
    image = registry.push("printer", wasmtime.wat2wasm(STDOUT_HANDLER))
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="printer", route="/print")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/printer/0", "Running")
        assert host.get("/print").status_code == 204
        wait_until(lambda: "[dev/demo/printer stdout] printed to stdout" in host.proc.log(), timeout=5,
                   what="stdout line in the host log")  # fmt: skip
