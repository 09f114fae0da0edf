;; wasi:cli/run@0.2.6 command that succeeds at once: run() returns ok (exit code 0).
(module
  (func (export "wasi:cli/run@0.2.6#run") (result i32)
    (i32.const 0)))
