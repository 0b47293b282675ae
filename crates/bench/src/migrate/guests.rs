//! The agents `warren bench migrate` moves and times, as WebAssembly text.

/// `main(hops)`: writes one word into every 4 KiB page of its `pages` 64 KiB pages, so that all
/// of them are dirty, then waits at its safe point until it has been moved `hops` times
/// (`migrate` returning 0 each time), and returns a checksum of one word per page. The state
/// is the whole memory, so a snapshot carries every page of it.
pub fn state(pages: u32) -> String {
    format!(
        r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (func (export "main") (param $hops i32) (result i64) (local $at i32) (local $moves i32) (local $sum i64)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (i32.const {end})))
      (i32.store (i32.add (local.get $at) (i32.const 64)) (i32.add (local.get $at) (i32.const 1)))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (block $moved (loop $park
      (br_if $moved (i32.ge_u (local.get $moves) (local.get $hops)))
      (if (global.get $flag) (then
        (if (i32.eqz (call $migrate (i32.const 0) (i32.const 0)))
          (then (local.set $moves (i32.add (local.get $moves) (i32.const 1)))))))
      (br $park)))
    (local.set $at (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (i32.const {end})))
      (local.set $sum (i64.add (local.get $sum) (i64.load32_u (i32.add (local.get $at) (i32.const 64)))))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (local.get $sum)))"#,
        end = u64::from(pages) * 65536
    )
}

/// What [`state`]'s `main` returns for `pages`, moved or not: the sum of `at + 1` over the
/// start of every 4 KiB page.
pub fn state_checksum(pages: u32) -> i64 {
    (0..u64::from(pages) * 16).map(|page| page * 4096 + 1).sum::<u64>() as i64
}

/// Two loops, with a safe point at their header (`safe`) or without: `sum` adds a counter per
/// iteration (the worst case: the check is most of the loop), `mix` loads, hashes and stores a
/// word per iteration over a 64 KiB table (a loop that does some work).
pub fn loops(safe: bool) -> String {
    let (import, global, check) = if safe {
        (
            r#"(import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))"#,
            r#"(global $flag (export "migrate_requested") (mut i32) (i32.const 0))"#,
            "(if (global.get $flag) (then (drop (call $migrate (i32.const 0) (i32.const 0)))))",
        )
    } else {
        ("", "", "")
    };
    format!(
        r#"(module {import}
  (memory (export "memory") 2) {global}
  (func (export "sum") (param $n i64) (result i64) (local $acc i64)
    (block $d (loop $l {check}
      (br_if $d (i64.eqz (local.get $n)))
      (local.set $acc (i64.add (local.get $acc) (local.get $n)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $l)))
    (local.get $acc))
  (func (export "mix") (param $n i64) (result i64) (local $i i64) (local $x i64) (local $at i32)
    (local.set $x (i64.const 0xcbf29ce484222325))
    (block $d (loop $l {check}
      (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (local.set $at (i32.shl (i32.wrap_i64 (i64.and (local.get $i) (i64.const 8191))) (i32.const 3)))
      (local.set $x (i64.mul (i64.xor (local.get $x) (i64.load (local.get $at))) (i64.const 0x100000001b3)))
      (i64.store (local.get $at) (local.get $x))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $l)))
    (local.get $x)))"#
    )
}
