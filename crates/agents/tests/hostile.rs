//! Hostile agents: each is stopped or refused with a clear error, and the host and the other
//! agents carry on.

mod common;

use std::time::Duration;

use common::{SPIN, SUM, host, host_with, load, wait_for};
use warren_agents::{Access, Grants, HostConfig, ImportError, Job, KvGrant, Limits, Need, RunError, Value};

fn sum_job(module: warren_agents::ModuleId, n: i64) -> Job {
    Job { args: vec![Value::I64(n)], ..Job::new(module, "sum") }
}

#[test]
fn an_endless_loop_is_stopped_by_its_fuel() {
    let host = host();
    let spin = load(&host, SPIN);
    let job = Job {
        limits: Limits { fuel: 1_000_000, wall: Duration::from_secs(10), ..Limits::default() },
        ..Job::new(spin, "spin")
    };
    let error = host.run(&job).unwrap_err();
    assert_eq!(error, RunError::OutOfFuel(1_000_000));
    assert_eq!(error.to_string(), "the agent ran out of fuel (1000000 units)");
}

#[test]
fn an_endless_loop_is_stopped_by_its_wall_time() {
    let host = host();
    let spin = load(&host, SPIN);
    // Fuel for many seconds of spinning: the epoch deadline stops it first.
    let limits = Limits { fuel: 10_000_000_000, wall: Duration::from_millis(50), ..Limits::default() };
    let error = host.run(&Job { limits, ..Job::new(spin, "spin") }).unwrap_err();
    assert_eq!(error, RunError::Deadline(Duration::from_millis(50)));
}

#[test]
fn a_loop_in_the_start_function_is_stopped_too() {
    let host = host();
    let module = load(&host, r#"(module (func $start (loop $l (br $l))) (start $start) (func (export "main")))"#);
    let job = Job { limits: Limits { fuel: 100_000, ..Limits::default() }, ..Job::new(module, "main") };
    assert_eq!(host.run(&job), Err(RunError::OutOfFuel(100_000)));
}

/// Grows its memory a page at a time and aborts when refused, as an allocator does.
const HOARD: &str = r#"(module (memory (export "memory") 1)
  (func (export "hoard")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))"#;

#[test]
fn unbounded_allocation_is_refused_at_the_memory_limit() {
    let host = host();
    let hoard = load(&host, HOARD);
    let job = Job { limits: Limits { memory: 1 << 20, ..Limits::default() }, ..Job::new(hoard, "hoard") };
    let error = host.run(&job).unwrap_err();
    assert_eq!(error, RunError::MemoryLimit { wanted: (1 << 20) + 65536, limit: 1 << 20 });
    assert_eq!(error.to_string(), "the agent asked for 1114112 bytes of memory, over its limit of 1048576");
}

#[test]
fn a_refused_growth_the_agent_handles_is_no_error() {
    let host = host();
    let module = load(
        &host,
        r#"(module (memory (export "memory") 1)
             (func (export "try") (result i32) (memory.grow (i32.const 100))))"#,
    );
    let job = Job { limits: Limits { memory: 1 << 20, ..Limits::default() }, ..Job::new(module, "try") };
    assert_eq!(host.run(&job).unwrap().results, [Value::I32(-1)]);
}

#[test]
fn a_module_whose_initial_memory_is_over_the_limit_is_refused() {
    let host = host();
    let module = load(&host, r#"(module (memory 32) (func (export "main")))"#);
    let job = Job { limits: Limits { memory: 1 << 20, ..Limits::default() }, ..Job::new(module, "main") };
    assert_eq!(host.run(&job), Err(RunError::MemoryLimit { wanted: 32 << 16, limit: 1 << 20 }));
}

#[test]
fn table_growth_is_refused_at_the_table_limit() {
    let host = host();
    let module = load(
        &host,
        r#"(module (table 1 funcref)
             (func (export "grow") (result i32) (table.grow (ref.null func) (i32.const 1000))))"#,
    );
    let job = Job { limits: Limits { table: 100, ..Limits::default() }, ..Job::new(module, "grow") };
    assert_eq!(host.run(&job).unwrap().results, [Value::I32(-1)]);
}

#[test]
fn endless_recursion_exhausts_the_stack_not_the_host() {
    let host = host();
    let module = load(&host, r#"(module (func $down (export "down") (call $down)))"#);
    assert_eq!(host.run(&Job::new(module, "down")), Err(RunError::StackOverflow));
}

#[test]
fn an_ungranted_import_is_refused_at_instantiation() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "warren" "clock_ms" (func $now (result i64)))
             (func (export "now") (result i64) (call $now)))"#,
    );
    let error = host.run(&Job::new(module, "now")).unwrap_err();
    assert_eq!(error, RunError::Import(ImportError::NotGranted { name: "clock_ms".into(), need: Need::Clock }));
    assert_eq!(error.to_string(), "the agent imports warren.clock_ms, which needs the clock capability, not granted");

    let granted = Job { grants: Grants { clock: true, ..Grants::default() }, ..Job::new(module, "now") };
    let [Value::I64(now)] = host.run(&granted).unwrap().results[..] else { panic!("one i64") };
    assert!(now > 1_700_000_000_000, "clock_ms is Unix milliseconds, not {now}");
}

#[test]
fn a_read_only_bucket_does_not_open_kv_put() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "warren" "kv_put" (func (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1) (func (export "main")))"#,
    );
    let grants = Grants { kv: Some(KvGrant { bucket: "b".into(), access: Access::Read }), ..Grants::default() };
    assert_eq!(
        host.run(&Job { grants, ..Job::new(module, "main") }),
        Err(RunError::Import(ImportError::NotGranted { name: "kv_put".into(), need: Need::KvWrite }))
    );
}

#[test]
fn an_import_the_host_does_not_offer_is_refused() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
    );
    let error = host.run(&Job::new(module, "_start")).unwrap_err();
    assert_eq!(error.to_string(), "the agent imports wasi_snapshot_preview1.fd_write, which this host does not offer");
}

#[test]
fn output_past_its_limit_stops_the_agent() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "warren" "output_write" (func $out (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "flood") (loop $again (drop (call $out (i32.const 0) (i32.const 4096))) (br $again))))"#,
    );
    let job = Job { limits: Limits { output: 10_000, ..Limits::default() }, ..Job::new(module, "flood") };
    assert_eq!(host.run(&job), Err(RunError::OutputLimit { wanted: 12_288, limit: 10_000 }));
}

#[test]
fn a_buffer_outside_memory_is_a_trap_with_the_import_named() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "warren" "log" (func $log (param i32 i32)))
             (memory (export "memory") 1)
             (func (export "main") (call $log (i32.const 65530) (i32.const 100))))"#,
    );
    let job = Job { grants: Grants { log: true, ..Grants::default() }, ..Job::new(module, "main") };
    let Err(RunError::Trap(message)) = host.run(&job) else { panic!("a trap") };
    assert!(message.contains("the agent passed log a buffer outside its memory (65530+100)"), "{message}");
}

#[test]
fn hostile_agents_leave_the_host_and_other_agents_running() {
    let host = host_with(HostConfig::default());
    let (sum, spin, hoard) = (load(&host, SUM), load(&host, SPIN), load(&host, HOARD));
    let expected = |n: i64| n * (n + 1) / 2;
    std::thread::scope(|scope| {
        let spinner = scope.spawn(|| {
            let limits = Limits { fuel: 10_000_000_000, wall: Duration::from_millis(300), ..Limits::default() };
            host.run(&Job { limits, ..Job::new(spin, "spin") })
        });
        let hoarder = scope.spawn(|| {
            let limits = Limits { memory: 4 << 20, ..Limits::default() };
            host.run(&Job { limits, ..Job::new(hoard, "hoard") })
        });
        // Well-behaved agents run to their end while the others are being stopped.
        for n in 1..=20 {
            assert_eq!(host.run(&sum_job(sum, n * 1000)).unwrap().results, [Value::I64(expected(n * 1000))]);
        }
        assert!(matches!(spinner.join().unwrap(), Err(RunError::Deadline(_))));
        assert!(matches!(hoarder.join().unwrap(), Err(RunError::MemoryLimit { .. })));
    });
    assert_eq!(host.run(&sum_job(sum, 10)).unwrap().results, [Value::I64(55)]);
}

#[test]
fn agents_past_the_hosts_maximum_are_refused_until_one_ends() {
    let host = host_with(HostConfig { max_agents: 1, ..HostConfig::default() });
    let sum = load(&host, SUM);
    let flagged = load(
        &host,
        r#"(module (import "warren" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1) (data (i32.const 0) "up")
             (func (export "main") (drop (call $put (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 2)))
               (loop $forever (br $forever))))"#,
    );
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            let grants =
                Grants { kv: Some(KvGrant { bucket: "flag".into(), access: Access::ReadWrite }), ..Grants::default() };
            let limits = Limits { fuel: 10_000_000_000, wall: Duration::from_millis(500), ..Limits::default() };
            host.run(&Job { grants, limits, ..Job::new(flagged, "main") })
        });
        wait_for("the first agent to start", || host.kv().get("flag", b"up").is_some());
        assert_eq!(host.run(&sum_job(sum, 3)), Err(RunError::Busy(1)));
        assert!(matches!(busy.join().unwrap(), Err(RunError::Deadline(_))));
    });
    assert_eq!(host.run(&sum_job(sum, 3)).unwrap().results, [Value::I64(6)]);
}
