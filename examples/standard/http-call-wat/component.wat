;; wasi:http/proxy@0.2.6 handler that makes one outbound request per request and says what happened:
;;   GET /<route>/<scheme>/<authority>/<path?query>  sends GET <scheme>://<authority>/<path?query>
;;   <route>: one segment, skipped (where the component is exposed: the ingress passes the full path)
;;   <scheme>: http or https; anything else (e.g. `default`) leaves the scheme unset (wasmtime: https)
;; and answers 200 with a body of one line:
;;   "status <code>"  the response arrived with that status
;;   "error <n>"      handle() or the response failed with wasi:http error-code case n
;;                    (15: HTTP-request-denied; 6: connection-refused)
;; One instance per request (wasmtime serve's default), so the bump allocator never frees.
(module
  (import "wasi:http/types@0.2.6" "[constructor]fields" (func $fields_new (result i32)))
  (import "wasi:http/types@0.2.6" "[constructor]outgoing-request" (func $req_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-request.set-scheme"
    (func $set_scheme (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-request.set-authority"
    (func $set_authority (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-request.set-path-with-query"
    (func $set_path (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/outgoing-handler@0.2.6" "handle" (func $handle (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.6" "[method]future-incoming-response.subscribe" (func $subscribe (param i32) (result i32)))
  (import "wasi:io/poll@0.2.6" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.6" "[resource-drop]pollable" (func $drop_pollable (param i32)))
  (import "wasi:http/types@0.2.6" "[method]future-incoming-response.get" (func $future_get (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[method]incoming-response.status" (func $status (param i32) (result i32)))
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

  (memory (export "memory") 1)
  ;; 0..511: return areas; 1024..: constant strings; 4096..: the bump heap
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 1024) "http")
  (data (i32.const 1032) "https")
  (data (i32.const 1040) "status ")
  (data (i32.const 1048) "error ")
  (data (i32.const 1056) "/")

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

  ;; the index of the first '/' in [p+from, p+n), or n
  (func $slash (param $p i32) (param $n i32) (param $from i32) (result i32)
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (local.get $from) (local.get $n)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $from))) (i32.const 47)))
        (local.set $from (i32.add (local.get $from) (i32.const 1)))
        (br $next)))
    (local.get $from))

  ;; answer 200 with the $len bytes at $buf followed by the decimal $n and "\n"
  (func $respond (param $out i32) (param $buf i32) (param $len i32) (param $n i32)
    (local $text i32) (local $at i32) (local $digits i32) (local $v i32) (local $resp i32) (local $body i32)
    (local $stream i32)
    (local.set $text (call $alloc (i32.const 1) (i32.add (local.get $len) (i32.const 12))))
    (memory.copy (local.get $text) (local.get $buf) (local.get $len))
    ;; digits of $n, most significant first
    (local.set $v (local.get $n))
    (local.set $digits (i32.const 1))
    (loop $count
      (if (i32.ge_u (local.get $v) (i32.const 10))
        (then
          (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
          (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
          (br $count))))
    (local.set $at (i32.add (i32.add (local.get $text) (local.get $len)) (local.get $digits)))
    (i32.store8 (local.get $at) (i32.const 10))
    (local.set $v (local.get $n))
    (loop $write_digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $write_digit (i32.gt_u (local.get $at) (i32.add (local.get $text) (local.get $len)))))
    (local.set $resp (call $resp_new (call $fields_new)))
    (call $resp_body (local.get $resp) (i32.const 16))
    (local.set $body (i32.load (i32.const 20)))
    (call $outparam_set (local.get $out) (i32.const 0) (local.get $resp)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $body_write (local.get $body) (i32.const 32))
    (local.set $stream (i32.load (i32.const 36)))
    (call $write (local.get $stream) (local.get $text)
      (i32.add (i32.add (local.get $len) (local.get $digits)) (i32.const 1)) (i32.const 48))
    (call $drop_stream (local.get $stream))
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 96)))

  (func (export "wasi:http/incoming-handler@0.2.6#handle") (param $req i32) (param $out i32)
    (local $path i32) (local $n i32) (local $a i32) (local $b i32) (local $request i32) (local $future i32)
    (local $pollable i32)
    ;; path-with-query() -> option<string> at 64: discriminant u8 @64, ptr @68, len @72
    (call $req_path (local.get $req) (i32.const 64))
    (local.set $path (i32.load (i32.const 68)))
    (local.set $n (i32.load (i32.const 72)))
    (call $drop_req (local.get $req))
    ;; /<route>/<scheme>/<authority><rest>: the route skipped (path and n now start at its end), then
    ;; $a the end of the scheme, $b the end of the authority
    (local.set $a (call $slash (local.get $path) (local.get $n) (i32.const 1)))
    (local.set $path (i32.add (local.get $path) (local.get $a)))
    (local.set $n (i32.sub (local.get $n) (local.get $a)))
    (local.set $a (call $slash (local.get $path) (local.get $n) (i32.const 1)))
    (local.set $b (call $slash (local.get $path) (local.get $n) (i32.add (local.get $a) (i32.const 1))))
    (local.set $request (call $req_new (call $fields_new)))
    (if (i32.and (i32.eq (local.get $a) (i32.const 5)) (call $equal (i32.add (local.get $path) (i32.const 1)) (i32.const 1024) (i32.const 4)))
      (then (drop (call $set_scheme (local.get $request) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (if (i32.and (i32.eq (local.get $a) (i32.const 6)) (call $equal (i32.add (local.get $path) (i32.const 1)) (i32.const 1032) (i32.const 5)))
      (then (drop (call $set_scheme (local.get $request) (i32.const 1) (i32.const 1) (i32.const 0) (i32.const 0)))))
    (drop (call $set_authority (local.get $request) (i32.const 1)
      (i32.add (i32.add (local.get $path) (local.get $a)) (i32.const 1))
      (i32.sub (i32.sub (local.get $b) (local.get $a)) (i32.const 1))))
    (if (i32.lt_u (local.get $b) (local.get $n))
      (then (drop (call $set_path (local.get $request) (i32.const 1) (i32.add (local.get $path) (local.get $b))
                                  (i32.sub (local.get $n) (local.get $b)))))
      (else (drop (call $set_path (local.get $request) (i32.const 1) (i32.const 1056) (i32.const 1)))))
    ;; handle() -> result<own<future-incoming-response>, error-code> at 128: tag @128, payload @136
    (call $handle (local.get $request) (i32.const 0) (i32.const 0) (i32.const 128))
    (if (i32.load8_u (i32.const 128))
      (then (call $respond (local.get $out) (i32.const 1048) (i32.const 6) (i32.load8_u (i32.const 136))) (return)))
    (local.set $future (i32.load (i32.const 136)))
    (local.set $pollable (call $subscribe (local.get $future)))
    (call $block (local.get $pollable))
    (call $drop_pollable (local.get $pollable))
    ;; get() -> option<result<result<own<incoming-response>, error-code>>> at 192:
    ;; option tag @192, outer result tag @200, inner result tag @208, response or error-code tag @216
    (call $future_get (local.get $future) (i32.const 192))
    (if (i32.load8_u (i32.const 208))
      (then (call $respond (local.get $out) (i32.const 1048) (i32.const 6) (i32.load8_u (i32.const 216))) (return)))
    (call $respond (local.get $out) (i32.const 1040) (i32.const 7) (call $status (i32.load (i32.const 216))))))
