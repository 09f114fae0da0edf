;; wasi:cli/run@0.2.6 command that fails at once: run() returns err (exit code 1).
(module
  (func (export "wasi:cli/run@0.2.6#run") (result i32)
    (i32.const 1)))
