;; wasi:config/store over wasi:cli/environment: an adapter composed into a component that imports
;; wasi:config/store (host/compose.py), so config reaches it through the environment of its
;; `wasmtime serve` process (`--env NAME`, the value in the child's environment) and never through
;; `-S config-var=NAME=VALUE`, which a command line shows to `ps`.
;;
;;   get(key)  -> ok(some(value)) for the environment variable named exactly `key`, ok(none) otherwise
;;   get-all() -> ok(every environment variable)
;; INSTANCE_ID (which `wasmtime serve` injects into every instance's environment) is not config: both
;; skip it. Errors are never returned: the environment cannot fail.
;;
;; host/compose.py rewrites the version of the environment import below to the one the component
;; itself imports, so the composition imports wasi:cli/environment once.
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-environment" (func (result (list (tuple string string)))))))

  ;; memory + allocator in their own core module so the lowered import can use them. A bump
  ;; allocator: the heap is reset after each call (post-return), when the caller has copied the result.
  (core module $Mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $nsz)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                              (i32.const 16)))
                      (i32.const -1))
            (then unreachable))))
      (global.set $heap (local.get $end))
      (if (local.get $old) (then (memory.copy (local.get $p) (local.get $old) (local.get $osz))))
      (local.get $p))
    (func (export "reset") (param i32) (global.set $heap (i32.const 1024))))
  (core instance $mem (instantiate $Mem))

  (alias export $env "get-environment" (func $get_environment))
  (core func $get_environment_lowered
    (canon lower (func $get_environment) (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))

  ;; Layout below the heap (1024): 16 the environment's (ptr, len); 32 the result of get; 64 the result
  ;; of get-all; 96 "INSTANCE_ID".
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "env" "get-environment" (func $get_environment (param i32)))
    (data (i32.const 96) "INSTANCE_ID")

    ;; bytes [a, a+n) == bytes [b, b+n)
    (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
      (block $differ
        (loop $next
          (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
          (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
          (local.set $a (i32.add (local.get $a) (i32.const 1)))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $next)))
      (i32.const 0))

    ;; the entry at `e` (a tuple<string, string>: name ptr, name len, value ptr, value len) is named
    ;; [ptr, ptr+len)
    (func $named (param $e i32) (param $ptr i32) (param $len i32) (result i32)
      (if (result i32) (i32.eq (i32.load offset=4 (local.get $e)) (local.get $len))
        (then (call $same (i32.load (local.get $e)) (local.get $ptr) (local.get $len)))
        (else (i32.const 0))))

    (func $hidden (param $e i32) (result i32)
      (call $named (local.get $e) (i32.const 96) (i32.const 11)))

    ;; get: func(key: string) -> result<option<string>, error>
    ;; result layout: 0 u8 result case (0 ok), 4 u8 option case (1 some), 8 value ptr, 12 value len
    (func (export "get") (param $key i32) (param $klen i32) (result i32)
      (local $e i32) (local $end i32)
      (call $get_environment (i32.const 16))
      (local.set $e (i32.load (i32.const 16)))
      (local.set $end (i32.add (local.get $e) (i32.shl (i32.load (i32.const 20)) (i32.const 4))))
      (i32.store8 (i32.const 32) (i32.const 0))
      (i32.store8 (i32.const 36) (i32.const 0))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $e) (local.get $end)))
          (if (i32.and (call $named (local.get $e) (local.get $key) (local.get $klen))
                       (i32.eqz (call $hidden (local.get $e))))
            (then
              (i32.store8 (i32.const 36) (i32.const 1))
              (i32.store (i32.const 40) (i32.load offset=8 (local.get $e)))
              (i32.store (i32.const 44) (i32.load offset=12 (local.get $e)))
              (br $done)))
          (local.set $e (i32.add (local.get $e) (i32.const 16)))
          (br $next)))
      (i32.const 32))

    ;; get-all: func() -> result<list<tuple<string, string>>, error>
    ;; result layout: 0 u8 result case (0 ok), 4 list ptr, 8 list len. Hidden entries are dropped in place.
    (func (export "get-all") (result i32)
      (local $from i32) (local $to i32) (local $end i32) (local $base i32)
      (call $get_environment (i32.const 16))
      (local.set $base (i32.load (i32.const 16)))
      (local.set $from (local.get $base))
      (local.set $to (local.get $base))
      (local.set $end (i32.add (local.get $base) (i32.shl (i32.load (i32.const 20)) (i32.const 4))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $from) (local.get $end)))
          (if (i32.eqz (call $hidden (local.get $from)))
            (then
              (if (i32.ne (local.get $to) (local.get $from))
                (then (memory.copy (local.get $to) (local.get $from) (i32.const 16))))
              (local.set $to (i32.add (local.get $to) (i32.const 16)))))
          (local.set $from (i32.add (local.get $from) (i32.const 16)))
          (br $next)))
      (i32.store8 (i32.const 64) (i32.const 0))
      (i32.store (i32.const 68) (local.get $base))
      (i32.store (i32.const 72) (i32.shr_u (i32.sub (local.get $to) (local.get $base)) (i32.const 4)))
      (i32.const 64)))
  (core instance $main (instantiate $Main
    (with "env" (instance
      (export "memory" (memory $mem "memory"))
      (export "get-environment" (func $get_environment_lowered))))))

  (type $error (variant (case "upstream" string) (case "io" string)))
  (func $get (param "key" string) (result (result (option string) (error $error)))
    (canon lift (core func $main "get") (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))
                (post-return (core func $mem "reset"))))
  (func $get_all (result (result (list (tuple string string)) (error $error)))
    (canon lift (core func $main "get-all") (memory (core memory $mem "memory"))
                (post-return (core func $mem "reset"))))
  (instance $store
    (export "error" (type $error))
    (export "get" (func $get))
    (export "get-all" (func $get_all)))
  (export "wasi:config/store@0.2.0-rc.1" (instance $store))
)
