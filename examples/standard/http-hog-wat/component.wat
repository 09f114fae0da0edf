;; wasi:http/proxy@0.2.6 handler that grows its memory by 1 MiB steps (touching each step) until memory.grow fails,
;; then traps: every request ends in a 500, after using as much memory as the host allows (memory limit tests).
(module
  (memory (export "memory") 1)
  (func (export "wasi:http/incoming-handler@0.2.6#handle") (param $request i32) (param $response_out i32)
    (local $old i32)
    (loop $more
      (local.set $old (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $old) (i32.const -1)) (then unreachable))
      (i32.store8 (i32.mul (local.get $old) (i32.const 65536)) (i32.const 1))
      (br $more))))
