//! Strong mobility's costs, measured: freeze → resumed on another host for 64 KiB, 1 MiB and
//! 64 MiB of dirty state (p50 and p99), and the steady-state price of safe points against the
//! same loop without them. "Freeze" is what the hop adds to the same run without it (capture
//! and unwind); "resume" is instantiating, restoring, rewinding and running to the end; the
//! state is filled and summed by the guest, in both runs. Run with `cargo run --release -p warren-agents --example migrate`
//! (needs `wasm-opt`, Debian's binaryen). Prints Markdown tables.

use std::time::{Duration, Instant};

use warren_agents::{Ended, Freezer, Grants, Host, HostConfig, Job, Resume, Role, Snapshot, Trust, Unsigned, Value};

/// Writes a word into every 4 KiB page of `$pages` 64 KiB pages, so all of them are dirty,
/// then (if `$hop`) calls `migrate`; returns a checksum of one word per page.
fn state_guest(pages: u32) -> String {
    format!(
        r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (func (export "main") (param $hop i32) (result i64) (local $at i32) (local $end i32) (local $sum i64)
    (local.set $end (i32.const {end}))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (local.get $end)))
      (i32.store (i32.add (local.get $at) (i32.const 64)) (i32.add (local.get $at) (i32.const 1)))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (if (local.get $hop) (then (drop (call $migrate (i32.const 0) (i32.const 0)))))
    (local.set $at (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (local.get $end)))
      (local.set $sum (i64.add (local.get $sum) (i64.load32_u (i32.add (local.get $at) (i32.const 64)))))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (local.get $sum)))"#,
        end = pages as u64 * 65536
    )
}

/// Loops: `sum` is the worst case (an add and a counter per iteration), `mix` a loop that
/// loads, hashes and stores a word per iteration. `SAFE` is the safe point or nothing.
fn loop_guest(safe: bool) -> String {
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

fn host() -> Host {
    Host::new(HostConfig { trust: Trust::new().unsigned(Unsigned::Allow), ..HostConfig::default() }).unwrap()
}

/// Wall time and the CPU time of this thread, which runs both hosts' agents: on a shared
/// machine the first says how long it took, the second how much work it was.
#[derive(Clone, Copy)]
struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    fn now() -> Clock {
        let cpu = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("a thread clock");
        Clock { wall: Instant::now(), cpu: Duration::new(cpu.tv_sec() as u64, cpu.tv_nsec() as u32) }
    }

    /// (wall, CPU) since `self`.
    fn since(self) -> (Duration, Duration) {
        let now = Clock::now();
        (now.wall - self.wall, now.cpu.saturating_sub(self.cpu))
    }
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let (a, b) = (host(), host());
    // Wall-clock figures on a shared machine say little without its load.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("Load average at the start: {}\n", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("## Freeze → resumed on another host\n");
    println!("Milliseconds of this thread's CPU time (p50 unless marked), then wall time.\n");
    println!(
        "| state | runs | snapshot | unmoved run | freeze | encode + decode | resume | freeze → resumed p50 | p99 | wall p50 | wall p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, pages, runs) in [("64 KiB", 1, 200), ("1 MiB", 16, 100), ("64 MiB", 1024, 12)] {
        let wasm = wat::parse_str(state_guest(pages)).unwrap();
        let module = a.prepare(&wasm, None).unwrap().module;
        b.prepare(&wasm, None).unwrap();
        let job = |hop: i32| Job { args: vec![Value::I32(hop)], ..Job::new(module, "main") };
        let (mut unmoved_runs, mut freeze, mut wire, mut resume, mut total) = (vec![], vec![], vec![], vec![], vec![]);
        let mut wall = vec![];
        let mut size = 0;
        for _ in 0..runs {
            // The run without the hop is the baseline: the freeze is what the hop adds to it.
            let started = Clock::now();
            let Ended::Finished(unmoved) = a.run_mobile(&job(0), &Freezer::new()).unwrap() else { panic!() };
            let baseline = started.since();
            let started = Clock::now();
            let Ended::Frozen(snapshot) = a.run_mobile(&job(1), &Freezer::new()).unwrap() else { panic!() };
            let hopped = started.since();
            let started = Clock::now();
            let bytes = snapshot.encode();
            let arrived = Snapshot::decode(&bytes).unwrap();
            let carried = started.since();
            let started = Clock::now();
            let Ended::Finished(moved) = b.resume(&arrived, &Resume::new(Role::Original, Grants::default())).unwrap()
            else {
                panic!()
            };
            let resumed = started.since();
            assert_eq!(moved.results, unmoved.results);
            size = bytes.len();
            let frozen = (hopped.0.saturating_sub(baseline.0), hopped.1.saturating_sub(baseline.1));
            unmoved_runs.push(baseline.1);
            freeze.push(frozen.1);
            wire.push(carried.1);
            resume.push(resumed.1);
            total.push(frozen.1 + carried.1 + resumed.1);
            wall.push(frozen.0 + carried.0 + resumed.0);
        }
        println!(
            "| {label} | {runs} | {:.1} KiB | {} | {} | {} | {} | {} | {} | {} | {} |",
            size as f64 / 1024.0,
            ms(percentile(&mut unmoved_runs, 0.5)),
            ms(percentile(&mut freeze, 0.5)),
            ms(percentile(&mut wire, 0.5)),
            ms(percentile(&mut resume, 0.5)),
            ms(percentile(&mut total, 0.5)),
            ms(percentile(&mut total, 0.99)),
            ms(percentile(&mut wall, 0.5)),
            ms(percentile(&mut wall, 0.99)),
        );
    }

    println!("\n## Safe points in steady state (CPU time, best of 7, interleaved)\n");
    println!("| loop | iterations | plain | + flag check | + flag check + Asyncify | ratio |");
    println!("|---|---|---|---|---|---|");
    let plain = a.load(&wat::parse_str(loop_guest(false)).unwrap(), None).unwrap();
    let safe_wasm = wat::parse_str(loop_guest(true)).unwrap();
    let checked = a.load(&safe_wasm, None).unwrap();
    let prepared = a.prepare(&safe_wasm, None).unwrap();
    println!("<!-- module {} bytes, after Asyncify {} bytes -->", prepared.bytes, prepared.prepared_bytes);
    let n = 20_000_000i64;
    for entry in ["sum", "mix"] {
        let job = |module| Job { args: vec![Value::I64(n)], ..Job::new(module, entry) };
        let time = |run: &dyn Fn() -> Vec<Value>| {
            let started = Clock::now();
            let results = run();
            (started.since().1, results)
        };
        let (mut best_plain, mut best_checked, mut best_mobile) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..7 {
            let (t, expected) = time(&|| a.run(&job(plain)).unwrap().results);
            best_plain = best_plain.min(t);
            let (t, results) = time(&|| a.run(&job(checked)).unwrap().results);
            assert_eq!(results, expected);
            best_checked = best_checked.min(t);
            let (t, results) = time(&|| match a.run_mobile(&job(prepared.module), &Freezer::new()).unwrap() {
                Ended::Finished(outcome) => outcome.results,
                Ended::Frozen(_) => panic!("nobody asked it to move"),
            });
            assert_eq!(results, expected);
            best_mobile = best_mobile.min(t);
        }
        println!(
            "| {entry} | {n} | {} ms | {} ms | {} ms | {:.2}× |",
            ms(best_plain),
            ms(best_checked),
            ms(best_mobile),
            best_mobile.as_secs_f64() / best_plain.as_secs_f64()
        );
    }
}
