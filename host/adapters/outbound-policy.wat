;; The outbound policy: a core module that, made a component with outbound-policy.wit (`wasm-tools
;; component embed` + `new`) and composed into a wasi:http component (host/outbound.py), stands
;; between the component and wasmtime's wasi:http/outgoing-handler. `handle` passes a request on only
;; when its scheme and authority match a rule of the allow-list below; any other request is dropped
;; and answered with error-code.HTTP-request-denied, so nothing leaves the process.
;;
;; The request, as wasmtime would send it: scheme none means https (wasmtime's default), other
;; schemes are refused; an authority without a port means the scheme's port (80 or 443). Hosts are
;; compared lowercased; an authority with any character outside [a-z0-9.-_:[]] (userinfo `@`,
;; percent-encoding, spaces) is refused.
;;
;; Each refusal is also written to stderr, which the host logs tagged with the instance:
;;   outbound HTTP to <authority> refused: not in grants.outboundHosts (nor a link)
;; (bytes outside the allowed characters shown as '?', at most 256 of them).
;;
;; The rules (host/outbound.py writes them over the data segment at 1024 and sets $base past them),
;; one after another, 0xff after the last:
;;   u8 kind   0: the host exactly; 1: a suffix ".example.com" (a longer name ending with it)
;;   u8 mode   0: the port the scheme implies; 1: the port below; 2: any port
;;   u16 port  (little endian)
;;   u8 len, then len bytes of lowercase host or suffix
;; A suffix never matches an address: a host whose last label is a number (decimal, octal or 0x
;; hex, all of which the resolver reads as IPv4: 169.254.169.254, 2852039166, 0xa9.0xfe.0xa9.0xfe)
;; or an IPv6 literal in brackets matches only a rule naming it exactly. The rules as written here
;; (just 0xff) refuse everything.
(module
  (import "wasi:http/types@0.2.6" "[method]outgoing-request.scheme" (func $scheme (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[method]outgoing-request.authority" (func $authority (param i32 i32)))
  (import "wasi:http/types@0.2.6" "[resource-drop]outgoing-request" (func $drop_request (param i32)))
  (import "wasi:http/types@0.2.6" "[resource-drop]request-options" (func $drop_options (param i32)))
  (import "wasi:http/outgoing-handler@0.2.6" "handle" (func $handle (param i32 i32 i32 i32)))
  (import "wasi:cli/stderr@0.2.6" "get-stderr" (func $get_stderr (result i32)))
  (import "wasi:io/streams@0.2.6" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.6" "[resource-drop]output-stream" (func $drop_stream (param i32)))
  (import "wasi:io/error@0.2.6" "[resource-drop]error" (func $drop_error (param i32)))

  ;; 16: option<scheme> (tag, scheme tag at 20); 32: option<string> authority (tag, ptr at 36, len at 40);
  ;; 64: the result of handle (tag, error-code at 72); 96: the result of a write (tag, stream-error
  ;; tag at 100, error at 104); 256 and 320: the log line's text; 1024: the rules; $base: the heap
  (memory (export "memory") 1)
  (data (i32.const 256) "outbound HTTP to ")
  (data (i32.const 320) " refused: not in grants.outboundHosts (nor a link)\n")
  (data (i32.const 1024) "\ff")
  (global $base i32 (i32.const 2048))
  (global $heap (mut i32) (i32.const 2048))

  (func $alloc (param $size i32) (result i32)
    (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $size)))

  ;; a bump allocator, reset after each call (post-return) once the caller has copied the result
  (func $realloc (export "cabi_realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
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

  (func (export "cabi_post_wasi:http/outgoing-handler@0.2.6#handle") (param i32)
    (global.set $heap (global.get $base)))

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

  ;; a-z 0-9 . - _ : [ ]
  (func $authority_char (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.le_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 25))
              (i32.le_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9)))
      (i32.or
        (i32.or (i32.eq (local.get $c) (i32.const 46)) (i32.eq (local.get $c) (i32.const 45)))
        (i32.or (i32.or (i32.eq (local.get $c) (i32.const 95)) (i32.eq (local.get $c) (i32.const 58)))
                (i32.or (i32.eq (local.get $c) (i32.const 91)) (i32.eq (local.get $c) (i32.const 93)))))))

  ;; the index of the first byte $c in [p+from, p+n), or n
  (func $index_of (param $p i32) (param $n i32) (param $c i32) (param $from i32) (result i32)
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (local.get $from) (local.get $n)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $from))) (local.get $c)))
        (local.set $from (i32.add (local.get $from) (i32.const 1)))
        (br $next)))
    (local.get $from))

  ;; 1 when the last label of the host [p, p+n) is empty or a number the resolver reads as part of an
  ;; IPv4 address (all digits, or 0x...)
  (func $address_like (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $start i32)
    (local.set $i (local.get $n))
    (block $found
      (loop $back
        (br_if $found (i32.eqz (local.get $i)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.sub (local.get $i) (i32.const 1))))
                              (i32.const 46)))
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br $back)))
    (local.set $start (local.get $i))
    (if (i32.eq (local.get $start) (local.get $n)) (then (return (i32.const 1))))
    (if (i32.and (i32.ge_u (i32.sub (local.get $n) (local.get $start)) (i32.const 2))
                 (i32.and (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $start))) (i32.const 48))
                          (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.add (local.get $start) (i32.const 1))))
                                  (i32.const 120))))
      (then (return (i32.const 1))))
    (loop $digits
      (if (i32.gt_u (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)) (i32.const 9))
        (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $digits (i32.lt_u (local.get $i) (local.get $n))))
    (i32.const 1))

  ;; the port the request's scheme implies: none (wasmtime sends https) and HTTPS 443, HTTP 80; 0 for others
  (func $scheme_port (param $req i32) (result i32)
    (call $scheme (local.get $req) (i32.const 16))
    (if (i32.eqz (i32.load8_u (i32.const 16))) (then (return (i32.const 443))))
    (if (i32.eqz (i32.load8_u (i32.const 20))) (then (return (i32.const 80))))
    (if (i32.eq (i32.load8_u (i32.const 20)) (i32.const 1)) (then (return (i32.const 443))))
    (i32.const 0))

  ;; 1 when a rule allows the request
  (func $allowed (param $req i32) (result i32)
    (local $implied i32) (local $p i32) (local $n i32) (local $i i32) (local $c i32)
    (local $hostlen i32) (local $port i32) (local $address i32) (local $r i32) (local $len i32)
    (local $mode i32) (local $host_ok i32)
    (local.set $implied (call $scheme_port (local.get $req)))
    (if (i32.eqz (local.get $implied)) (then (return (i32.const 0))))
    (call $authority (local.get $req) (i32.const 32))
    (if (i32.eqz (i32.load8_u (i32.const 32))) (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 36)))
    (local.set $n (i32.load (i32.const 40)))
    (if (i32.or (i32.eqz (local.get $n)) (i32.gt_u (local.get $n) (i32.const 512))) (then (return (i32.const 0))))
    ;; lowercase the copy in place; refuse any other character; brackets make it an address
    (loop $chars
      (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (if (i32.le_u (i32.sub (local.get $c) (i32.const 65)) (i32.const 25))
        (then
          (local.set $c (i32.add (local.get $c) (i32.const 32)))
          (i32.store8 (i32.add (local.get $p) (local.get $i)) (local.get $c))))
      (if (i32.eqz (call $authority_char (local.get $c))) (then (return (i32.const 0))))
      (if (i32.or (i32.eq (local.get $c) (i32.const 91)) (i32.eq (local.get $c) (i32.const 93)))
        (then (local.set $address (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $chars (i32.lt_u (local.get $i) (local.get $n))))
    ;; the host ends at the port's ':' (for [v6]:port, the first ':' after the ']')
    (local.set $i (i32.const 0))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 91))
      (then (local.set $i (call $index_of (local.get $p) (local.get $n) (i32.const 93) (i32.const 0)))))
    (local.set $hostlen (call $index_of (local.get $p) (local.get $n) (i32.const 58) (local.get $i)))
    (if (i32.eqz (local.get $hostlen)) (then (return (i32.const 0))))
    (if (i32.eq (local.get $hostlen) (local.get $n))
      (then (local.set $port (local.get $implied)))
      (else
        ;; 1 to 5 decimal digits up to 65535
        (local.set $i (i32.add (local.get $hostlen) (i32.const 1)))
        (if (i32.or (i32.eq (local.get $i) (local.get $n)) (i32.gt_u (i32.sub (local.get $n) (local.get $i)) (i32.const 5)))
          (then (return (i32.const 0))))
        (loop $digits
          (local.set $c (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)))
          (if (i32.gt_u (local.get $c) (i32.const 9)) (then (return (i32.const 0))))
          (local.set $port (i32.add (i32.mul (local.get $port) (i32.const 10)) (local.get $c)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $digits (i32.lt_u (local.get $i) (local.get $n))))
        (if (i32.gt_u (local.get $port) (i32.const 65535)) (then (return (i32.const 0))))))
    (if (i32.eqz (local.get $address))
      (then (local.set $address (call $address_like (local.get $p) (local.get $hostlen)))))
    (local.set $r (i32.const 1024))
    (loop $rules
      (if (i32.eq (i32.load8_u (local.get $r)) (i32.const 255)) (then (return (i32.const 0))))
      (local.set $len (i32.load8_u offset=4 (local.get $r)))
      (local.set $host_ok (i32.const 0))
      (if (i32.load8_u (local.get $r))
        (then
          (if (i32.and (i32.eqz (local.get $address)) (i32.gt_u (local.get $hostlen) (local.get $len)))
            (then
              (local.set $host_ok
                (call $same (i32.sub (i32.add (local.get $p) (local.get $hostlen)) (local.get $len))
                            (i32.add (local.get $r) (i32.const 5)) (local.get $len))))))
        (else
          (if (i32.eq (local.get $hostlen) (local.get $len))
            (then
              (local.set $host_ok (call $same (local.get $p) (i32.add (local.get $r) (i32.const 5)) (local.get $len)))))))
      (if (local.get $host_ok)
        (then
          (local.set $mode (i32.load8_u offset=1 (local.get $r)))
          (if (i32.eq (local.get $mode) (i32.const 2)) (then (return (i32.const 1))))
          (if (i32.eq (local.get $port)
                      (select (i32.load16_u offset=2 align=1 (local.get $r)) (local.get $implied) (local.get $mode)))
            (then (return (i32.const 1))))))
      (local.set $r (i32.add (local.get $r) (i32.add (i32.const 5) (local.get $len))))
      (br $rules))
    (i32.const 0))

  ;; write the log line of a refused request to stderr
  (func $log_refused (param $req i32)
    (local $n i32) (local $from i32) (local $line i32) (local $at i32) (local $i i32) (local $c i32)
    (local $stream i32)
    (call $authority (local.get $req) (i32.const 32))
    (if (i32.load8_u (i32.const 32))
      (then
        (local.set $from (i32.load (i32.const 36)))
        (local.set $n (i32.load (i32.const 40)))
        (if (i32.gt_u (local.get $n) (i32.const 256)) (then (local.set $n (i32.const 256))))))
    (local.set $line (call $alloc (i32.add (local.get $n) (i32.const 68))))
    (memory.copy (local.get $line) (i32.const 256) (i32.const 17))
    (local.set $at (i32.add (local.get $line) (i32.const 17)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $from) (local.get $i))))
        (if (i32.le_u (i32.sub (local.get $c) (i32.const 65)) (i32.const 25))
          (then (local.set $c (i32.add (local.get $c) (i32.const 32)))))
        (if (i32.eqz (call $authority_char (local.get $c))) (then (local.set $c (i32.const 63))))
        (i32.store8 (i32.add (local.get $at) (local.get $i)) (local.get $c))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $at (i32.add (local.get $at) (local.get $n)))
    (memory.copy (local.get $at) (i32.const 320) (i32.const 51))
    (local.set $stream (call $get_stderr))
    (call $write (local.get $stream) (local.get $line) (i32.add (local.get $n) (i32.const 68)) (i32.const 96))
    (if (i32.and (i32.load8_u (i32.const 96)) (i32.eqz (i32.load8_u (i32.const 100))))
      (then (call $drop_error (i32.load (i32.const 104)))))
    (call $drop_stream (local.get $stream)))

  ;; handle: func(request: own<outgoing-request>, options: option<own<request-options>>)
  ;;   -> result<own<future-incoming-response>, error-code>
  (func (export "wasi:http/outgoing-handler@0.2.6#handle")
    (param $request i32) (param $has_options i32) (param $options i32) (result i32)
    (if (call $allowed (local.get $request))
      (then
        (call $handle (local.get $request) (local.get $has_options) (local.get $options) (i32.const 64))
        (return (i32.const 64))))
    (call $log_refused (local.get $request))
    (call $drop_request (local.get $request))
    (if (local.get $has_options) (then (call $drop_options (local.get $options))))
    (i32.store8 (i32.const 64) (i32.const 1))   ;; err
    (i32.store8 (i32.const 72) (i32.const 15))  ;; error-code.HTTP-request-denied
    (i32.const 64))
)
