;; frontend: an HTTP handler that imports driftless:demo/greeter (wired by a link to a greeter instance)
;; and answers with greet(<last path segment>), or greet("world") when the path ends in "/"; the query
;; string is not part of the name (/greet/ada?lang=fr greets "ada").
(component
  (import "driftless:demo/greeter" (instance $greeter
    (export "greet" (func (param "name" string) (result string)))))
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
  (alias export $greeter "greet" (func $greet))
  (core func $greet_lower (canon lower (func $greet) (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "greeter" "greet" (func $greet (param i32 i32 i32)))
    (data (i32.const 32) "world")
    (data (i32.const 128) "content-type")
    (data (i32.const 144) "text/plain")
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $i i32) (local $start i32) (local $np i32) (local $nl i32) (local $end i32)
      ;; end = index of the first '?' (the query string starts there), else the path's length
      (local.set $end (local.get 3))
      (block $found (loop $q
        (br_if $found (i32.ge_u (local.get $i) (local.get 3)))
        (if (i32.eq (i32.load8_u (i32.add (local.get 2) (local.get $i))) (i32.const 63))
          (then (local.set $end (local.get $i)) (br $found)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $q)))
      (local.set $i (i32.const 0))
      ;; start = index after the last '/' before end
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eq (i32.load8_u (i32.add (local.get 2) (local.get $i))) (i32.const 47))
          (then (local.set $start (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (local.set $np (i32.add (local.get 2) (local.get $start)))
      (local.set $nl (i32.sub (local.get $end) (local.get $start)))
      (if (i32.eqz (local.get $nl)) (then (local.set $np (i32.const 32)) (local.set $nl (i32.const 5))))
      ;; greet's string result written at 64: ptr @64, len @68
      (call $greet (local.get $np) (local.get $nl) (i32.const 64))
      (i32.store (i32.const 160) (i32.const 128)) (i32.store (i32.const 164) (i32.const 12))
      (i32.store (i32.const 168) (i32.const 144)) (i32.store (i32.const 172) (i32.const 10))
      (i32.store16 (i32.const 96) (i32.const 200))
      (i32.store (i32.const 100) (i32.const 160)) (i32.store (i32.const 104) (i32.const 1))
      (i32.store (i32.const 108) (i32.load (i32.const 64))) (i32.store (i32.const 112) (i32.load (i32.const 68)))
      (i32.const 96)))
  (core instance $main (instantiate $Main
    (with "env" (instance $mem))
    (with "greeter" (instance (export "greet" (func $greet_lower))))))
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
