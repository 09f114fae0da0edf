;; wasi:http/proxy@0.2.6 handler: answers 200 "hello from wat: <GREETING> path=<path-with-query>\n".
;; GREETING comes from wasi:cli/environment@0.2.6 get-environment (empty when unset). One instance per request
;; (wasmtime serve's default), so the bump allocator never frees.
(module
  (import "wasi:http/types@0.2.6" "[constructor]fields" (func $fields_new (result i32)))
  (import "wasi:http/types@0.2.6" "[constructor]outgoing-response" (func $resp_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-response.body" (func $resp_body (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[static]response-outparam.set"
    (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.6" "[method]incoming-request.path-with-query" (func $req_path (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[resource-drop]incoming-request" (func $drop_req (param i32)))
  (import "wasi:io/streams@0.2.6" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.6" "[resource-drop]output-stream" (func $drop_stream (param i32)))
  (import "wasi:cli/environment@0.2.6" "get-environment" (func $get_env (param i32)))

  (memory (export "memory") 1)
  ;; 0..255: return areas; 1024..: constant strings; 4096..: the bump heap
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 1024) "GREETING")
  (data (i32.const 1040) "hello from wat: ")
  (data (i32.const 1056) " path=")

  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (i32.const -1)
              (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                      (i32.const 16))))
          (then unreachable))))
    (global.set $bump (local.get $end))
    (local.get $p))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (call $alloc (local.get $align) (local.get $size)))

  ;; 1 when the $n bytes at $a and $b are equal
  (func $equal (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "wasi:http/incoming-handler@0.2.6#handle") (param $req i32) (param $out i32)
    (local $resp i32) (local $body i32) (local $stream i32)
    (local $path i32) (local $path_len i32) (local $val i32) (local $val_len i32)
    (local $entry i32) (local $count i32) (local $buf i32) (local $len i32) (local $at i32) (local $chunk i32)
    ;; path-with-query() -> option<string> at 64: discriminant u8 @64, ptr @68, len @72
    (call $req_path (local.get $req) (i32.const 64))
    (if (i32.load8_u (i32.const 64))
      (then (local.set $path (i32.load (i32.const 68))) (local.set $path_len (i32.load (i32.const 72)))))
    (call $drop_req (local.get $req))
    ;; get-environment() -> list<tuple<string, string>> at 80: ptr @80, count @84; 16 bytes per entry
    (call $get_env (i32.const 80))
    (local.set $entry (i32.load (i32.const 80)))
    (local.set $count (i32.load (i32.const 84)))
    (block $found
      (loop $scan
        (br_if $found (i32.eqz (local.get $count)))
        (if (i32.and (i32.eq (i32.load offset=4 (local.get $entry)) (i32.const 8))
                     (call $equal (i32.load (local.get $entry)) (i32.const 1024) (i32.const 8)))
          (then
            (local.set $val (i32.load offset=8 (local.get $entry)))
            (local.set $val_len (i32.load offset=12 (local.get $entry)))
            (br $found)))
        (local.set $entry (i32.add (local.get $entry) (i32.const 16)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $scan)))
    ;; body = "hello from wat: " GREETING " path=" path "\n"
    (local.set $len (i32.add (i32.add (i32.const 23) (local.get $val_len)) (local.get $path_len)))
    (local.set $buf (call $alloc (i32.const 1) (local.get $len)))
    (memory.copy (local.get $buf) (i32.const 1040) (i32.const 16))
    (local.set $at (i32.add (local.get $buf) (i32.const 16)))
    (memory.copy (local.get $at) (local.get $val) (local.get $val_len))
    (local.set $at (i32.add (local.get $at) (local.get $val_len)))
    (memory.copy (local.get $at) (i32.const 1056) (i32.const 6))
    (local.set $at (i32.add (local.get $at) (i32.const 6)))
    (memory.copy (local.get $at) (local.get $path) (local.get $path_len))
    (i32.store8 (i32.add (local.get $at) (local.get $path_len)) (i32.const 10))

    (local.set $resp (call $resp_new (call $fields_new)))
    ;; body() -> result<own<outgoing-body>> at 16: discriminant u8 @16, handle @20
    (call $resp_body (local.get $resp) (i32.const 16))
    (local.set $body (i32.load (i32.const 20)))
    ;; set(outparam, ok(resp)): status 200 is the default of a new outgoing-response
    (call $outparam_set (local.get $out) (i32.const 0) (local.get $resp)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    ;; write() -> result<own<output-stream>> at 32: handle @36
    (call $body_write (local.get $body) (i32.const 32))
    (local.set $stream (i32.load (i32.const 36)))
    ;; blocking-write-and-flush takes at most 4096 bytes per call
    (block $done
      (loop $write_more
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $chunk (select (i32.const 4096) (local.get $len) (i32.gt_u (local.get $len) (i32.const 4096))))
        (call $write (local.get $stream) (local.get $buf) (local.get $chunk) (i32.const 48))
        (local.set $buf (i32.add (local.get $buf) (local.get $chunk)))
        (local.set $len (i32.sub (local.get $len) (local.get $chunk)))
        (br $write_more)))
    (call $drop_stream (local.get $stream))
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 96))))
