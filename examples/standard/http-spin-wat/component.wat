;; wasi:http/proxy@0.2.6 handler that never returns: every request spins forever (for timeout and fuel tests).
(module
  (memory (export "memory") 1)
  (func (export "wasi:http/incoming-handler@0.2.6#handle") (param $request i32) (param $response_out i32)
    (loop $forever (br $forever))))
