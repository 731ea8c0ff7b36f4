;; email_mask - a redactor plugin written directly in WebAssembly text, to show
;; the raw ABI with nothing in between:
;;
;;   alloc(len) -> ptr            the host asks for a buffer and writes the input there
;;   process(ptr, len) -> i64     returns (out_ptr << 32) | out_len of a UTF-8 JSON object
;;
;; It scans the input JSON text for e-mail addresses (local@domain.tld) and
;; returns them as {"redact":["a@example.com",...]}; the engine then masks every
;; occurrence in the entry before rows are built. Addresses are not
;; de-duplicated (masking the same string twice is harmless).
(module
  ;; One 64 KiB page to start; alloc grows it (the host caps the total).
  (memory (export "memory") 1)

  ;; Constant strings.
  (data (i32.const 16) "{\"error\":\"out of memory\"}") ;; 25 bytes
  (data (i32.const 48) "{\"redact\":[")                 ;; 11 bytes
  (data (i32.const 64) "]}")                          ;; 2 bytes

  ;; Bump allocator: every call runs in a fresh instance, so nothing is freed.
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $pages i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; Wrapped around 4 GiB: cannot be satisfied.
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (return (i32.const 0))))
    ;; Pages needed to hold [0, end), computed in 64 bits to avoid overflow.
    (local.set $pages (i32.wrap_i64 (i64.shr_u
      (i64.add (i64.extend_i32_u (local.get $end)) (i64.const 65535)) (i64.const 16))))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        ;; memory.grow returns -1 once the host's memory limit is reached.
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    ;; Keep the next allocation 8-byte aligned.
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func $is_alpha (param $c i32) (result i32)
    (i32.lt_u (i32.sub (i32.or (local.get $c) (i32.const 32)) (i32.const 97)) (i32.const 26)))

  (func $is_alnum (param $c i32) (result i32)
    (i32.or (call $is_alpha (local.get $c))
            (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10))))

  ;; Domain characters: letters, digits, '.', '-'.
  (func $is_domain (param $c i32) (result i32)
    (i32.or (call $is_alnum (local.get $c))
      (i32.or (i32.eq (local.get $c) (i32.const 46)) (i32.eq (local.get $c) (i32.const 45)))))

  ;; Local-part characters: domain characters plus '_', '%', '+'.
  (func $is_local (param $c i32) (result i32)
    (i32.or (call $is_domain (local.get $c))
      (i32.or (i32.eq (local.get $c) (i32.const 95))
        (i32.or (i32.eq (local.get $c) (i32.const 37)) (i32.eq (local.get $c) (i32.const 43))))))

  (func (export "process") (param $in i32) (param $len i32) (result i64)
    (local $end i32)   ;; end of input
    (local $out i32)   ;; output buffer
    (local $o i32)     ;; output cursor
    (local $i i32)     ;; scan position
    (local $j i32)     ;; start of the address
    (local $k i32)     ;; end of the address
    (local $t i32)
    (local $n i32)
    (local $floor i32) ;; addresses may not start before the end of the previous one
    (local $count i32)
    (local $c i32)
    (local.set $end (i32.add (local.get $in) (local.get $len)))
    ;; Each address of L >= 6 bytes costs L + 3 output bytes, so 2*len + 64 always fits.
    (local.set $out (call $alloc (i32.add (i32.shl (local.get $len) (i32.const 1)) (i32.const 64))))
    (if (i32.eqz (local.get $out))
      (then (return (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 25)))))
    (memory.copy (local.get $out) (i32.const 48) (i32.const 11))
    (local.set $o (i32.add (local.get $out) (i32.const 11)))
    (local.set $floor (local.get $in))
    (local.set $i (local.get $in))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 64)) ;; '@'
          (then
            ;; Local part: walk back over allowed characters.
            (local.set $j (local.get $i))
            (block $b (loop $l
              (br_if $b (i32.le_u (local.get $j) (local.get $floor)))
              (br_if $b (i32.eqz (call $is_local (i32.load8_u (i32.sub (local.get $j) (i32.const 1))))))
              (local.set $j (i32.sub (local.get $j) (i32.const 1)))
              (br $l)))
            ;; The input is JSON text: after an odd number of backslashes the
            ;; first character is an escape letter ("\nbob@x.org"), not part of
            ;; the address; \uXXXX also swallows four hex digits.
            (local.set $t (local.get $j))
            (local.set $n (i32.const 0))
            (block $b (loop $l
              (br_if $b (i32.le_u (local.get $t) (local.get $floor)))
              (br_if $b (i32.ne (i32.load8_u (i32.sub (local.get $t) (i32.const 1))) (i32.const 92)))
              (local.set $t (i32.sub (local.get $t) (i32.const 1)))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br $l)))
            (if (i32.and (local.get $n) (i32.const 1))
              (then (local.set $j (i32.add (local.get $j)
                (select (i32.const 5) (i32.const 1)
                  (i32.eq (i32.load8_u (local.get $j)) (i32.const 117))))))) ;; 'u'
            ;; No leading dots.
            (block $b (loop $l
              (br_if $b (i32.ge_u (local.get $j) (local.get $i)))
              (br_if $b (i32.ne (i32.load8_u (local.get $j)) (i32.const 46)))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $l)))
            (if (i32.lt_u (local.get $j) (local.get $i))
              (then
                ;; Domain: walk forward, then drop trailing '.'/'-' (end of a sentence).
                (local.set $k (i32.add (local.get $i) (i32.const 1)))
                (block $b (loop $l
                  (br_if $b (i32.ge_u (local.get $k) (local.get $end)))
                  (br_if $b (i32.eqz (call $is_domain (i32.load8_u (local.get $k)))))
                  (local.set $k (i32.add (local.get $k) (i32.const 1)))
                  (br $l)))
                (block $b (loop $l
                  (br_if $b (i32.le_u (local.get $k) (i32.add (local.get $i) (i32.const 1))))
                  (local.set $c (i32.load8_u (i32.sub (local.get $k) (i32.const 1))))
                  (br_if $b (i32.and (i32.ne (local.get $c) (i32.const 46)) (i32.ne (local.get $c) (i32.const 45))))
                  (local.set $k (i32.sub (local.get $k) (i32.const 1)))
                  (br $l)))
                ;; Top-level domain: at least two letters after the last dot,
                ;; and a non-empty label before it that does not start with '.'.
                (local.set $t (local.get $k))
                (block $b (loop $l
                  (br_if $b (i32.le_u (local.get $t) (i32.add (local.get $i) (i32.const 1))))
                  (br_if $b (i32.eqz (call $is_alpha (i32.load8_u (i32.sub (local.get $t) (i32.const 1))))))
                  (local.set $t (i32.sub (local.get $t) (i32.const 1)))
                  (br $l)))
                (if (i32.and
                      (i32.and
                        (i32.ge_u (i32.sub (local.get $k) (local.get $t)) (i32.const 2))
                        (i32.gt_u (i32.sub (local.get $t) (i32.const 1)) (i32.add (local.get $i) (i32.const 1))))
                      (i32.and
                        (i32.eq (i32.load8_u (i32.sub (local.get $t) (i32.const 1))) (i32.const 46))
                        (i32.ne (i32.load8_u (i32.add (local.get $i) (i32.const 1))) (i32.const 46))))
                  (then
                    ;; Emit ,"local@domain"
                    (if (local.get $count)
                      (then
                        (i32.store8 (local.get $o) (i32.const 44))
                        (local.set $o (i32.add (local.get $o) (i32.const 1)))))
                    (i32.store8 (local.get $o) (i32.const 34))
                    (memory.copy (i32.add (local.get $o) (i32.const 1)) (local.get $j)
                      (i32.sub (local.get $k) (local.get $j)))
                    (local.set $o (i32.add (local.get $o)
                      (i32.add (i32.sub (local.get $k) (local.get $j)) (i32.const 1))))
                    (i32.store8 (local.get $o) (i32.const 34))
                    (local.set $o (i32.add (local.get $o) (i32.const 1)))
                    (local.set $count (i32.add (local.get $count) (i32.const 1)))
                    (local.set $floor (local.get $k))
                    ;; Continue right after the address (the +1 below lands on $k).
                    (local.set $i (i32.sub (local.get $k) (i32.const 1)))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (memory.copy (local.get $o) (i32.const 64) (i32.const 2))
    (local.set $o (i32.add (local.get $o) (i32.const 2)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $o) (local.get $out))))))
