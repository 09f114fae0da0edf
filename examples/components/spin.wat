;; spin: an HTTP handler that never answers (a busy loop), for the fuel / deadline limit tests.
(component
  ;; memory and the bump allocator live in their own core module so lowered imports can use them
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
  (core module $Main
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (loop $l (br $l))
      (i32.const 0)))
  (core instance $main (instantiate $Main))
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
