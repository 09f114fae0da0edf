;; hello: an HTTP handler (world driftless:http/http-handler).
;; Answers 200 "<GREETING> from <path>"; GREETING comes from the host's config interface (default "hello").
(component
  (import "driftless:http/config@0.1.0" (instance $config
    (export "get" (func (param "key" string) (result (option string))))))
  ;; memory and the bump allocator live in their own core module so the lowered import can use them
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $nsz)))
      (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
        (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1))
                (then unreachable))))
      (if (local.get $old) (then (memory.copy (local.get $p) (local.get $old) (local.get $osz))))
      (global.set $heap (local.get $end))
      (local.get $p))
    ;; post-return: every call starts with an empty heap
    (func (export "reset") (param i32) (global.set $heap (i32.const 1024))))
  (core instance $mem (instantiate $Mem))
  (alias export $config "get" (func $get))
  (core func $get_lower (canon lower (func $get) (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "env" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "config" "get" (func $get (param i32 i32 i32)))
    (data (i32.const 16) "GREETING")
    (data (i32.const 32) "hello")
    (data (i32.const 48) " from ")
    (data (i32.const 128) "content-type")
    (data (i32.const 144) "text/plain")
    ;; handle(method ptr,len, path ptr,len, headers ptr,len, body ptr,len) -> pointer to the response record
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $gptr i32) (local $glen i32) (local $out i32) (local $n i32)
      ;; option<string> written at 64: tag @64, ptr @68, len @72
      (call $get (i32.const 16) (i32.const 8) (i32.const 64))
      (if (i32.load8_u (i32.const 64))
        (then (local.set $gptr (i32.load (i32.const 68))) (local.set $glen (i32.load (i32.const 72))))
        (else (local.set $gptr (i32.const 32)) (local.set $glen (i32.const 5))))
      (local.set $n (i32.add (i32.add (local.get $glen) (i32.const 6)) (local.get 3)))
      (local.set $out (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $n)))
      (memory.copy (local.get $out) (local.get $gptr) (local.get $glen))
      (memory.copy (i32.add (local.get $out) (local.get $glen)) (i32.const 48) (i32.const 6))
      (memory.copy (i32.add (local.get $out) (i32.add (local.get $glen) (i32.const 6))) (local.get 2) (local.get 3))
      ;; one header tuple at 160
      (i32.store (i32.const 160) (i32.const 128)) (i32.store (i32.const 164) (i32.const 12))
      (i32.store (i32.const 168) (i32.const 144)) (i32.store (i32.const 172) (i32.const 10))
      ;; response at 96: status @96, headers ptr,len @100, body ptr,len @108
      (i32.store16 (i32.const 96) (i32.const 200))
      (i32.store (i32.const 100) (i32.const 160)) (i32.store (i32.const 104) (i32.const 1))
      (i32.store (i32.const 108) (local.get $out)) (i32.store (i32.const 112) (local.get $n))
      (i32.const 96)))
  (core instance $main (instantiate $Main
    (with "env" (instance $mem))
    (with "config" (instance (export "get" (func $get_lower))))))
  (type $header (tuple string string))
  (type $request (record (field "method" string) (field "path" string) (field "headers" (list $header)) (field "body" (list u8))))
  (type $response (record (field "status" u16) (field "headers" (list $header)) (field "body" (list u8))))
  (func $handle (param "req" $request) (result $response)
    (canon lift (core func $main "handle") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))
                (post-return (core func $mem "reset"))))
  (instance $handler
    (export "request" (type $request))
    (export "response" (type $response))
    (export "handle" (func $handle)))
  (export "driftless:http/handler@0.1.0" (instance $handler))
)
