//! The host's ordinary work: admitting modules, running entries with arguments and input, and
//! the capabilities an agent was granted.

mod common;

use common::{SUM, host, load, operator};
use warren_agents::{
    Access, Grants, Host, HostConfig, Job, KvGrant, KvLimits, Limits, LoadError, ModuleId, ModuleSignature, RunError,
    SigningKey, Trust, TrustError, Unsigned, Value,
};

#[test]
fn a_signed_module_runs_its_entry_with_arguments() {
    let host = host();
    let sum = load(&host, SUM);
    let outcome = host.run(&Job { args: vec![Value::I64(100)], ..Job::new(sum, "sum") }).unwrap();
    assert_eq!(outcome.results, [Value::I64(5050)]);
}

#[test]
fn unsigned_and_foreign_modules_are_refused_unless_allowed() {
    let bytes = wat::parse_str(SUM).unwrap();
    let id = ModuleId::of(&bytes);
    let host = host();
    assert_eq!(host.load(&bytes, None), Err(LoadError::Trust(TrustError::Unsigned(id))));
    let stranger = ModuleSignature::sign(&id, &SigningKey::from_bytes(&[9; 32]));
    assert!(matches!(host.load(&bytes, Some(&stranger)), Err(LoadError::Trust(TrustError::UntrustedKey { .. }))));
    assert!(!host.has(&id));

    let open =
        Host::new(HostConfig { trust: Trust::new().unsigned(Unsigned::Allow), ..HostConfig::default() }).unwrap();
    assert_eq!(open.load(&bytes, None), Ok(id));
}

#[test]
fn a_module_is_known_by_its_hash_and_compiled_once() {
    let host = host();
    let first = load(&host, SUM);
    let again = load(&host, SUM);
    assert_eq!(first, again);
    assert_eq!(first, ModuleId::of(&wat::parse_str(SUM).unwrap()));
    assert_eq!(host.loaded(), 1);
}

#[test]
fn the_oldest_module_is_forgotten_past_the_maximum() {
    let host = common::host_with(HostConfig { max_modules: 2, ..HostConfig::default() });
    let modules: Vec<ModuleId> =
        (0..3).map(|n| load(&host, &format!(r#"(module (func (export "n") (result i32) (i32.const {n})))"#))).collect();
    assert_eq!(host.loaded(), 2);
    assert!(!host.has(&modules[0]));
    assert_eq!(host.run(&Job::new(modules[0], "n")), Err(RunError::UnknownModule(modules[0])));
    assert_eq!(host.run(&Job::new(modules[2], "n")).unwrap().results, [Value::I32(2)]);
}

#[test]
fn bad_modules_get_a_clear_error() {
    let host = host();
    let junk = b"\0asm\x01\0\0\0garbage";
    let signature = ModuleSignature::sign(&ModuleId::of(junk), &operator());
    let Err(LoadError::Invalid(message)) = host.load(junk, Some(&signature)) else { panic!("invalid") };
    assert!(!message.is_empty());

    let small = common::host_with(HostConfig { max_module_bytes: 8, ..HostConfig::default() });
    assert_eq!(small.load(junk, None), Err(LoadError::TooLarge { size: junk.len(), limit: 8 }));
}

#[test]
fn a_wrong_entry_or_arguments_are_refused_before_running() {
    let host = host();
    let sum = load(&host, SUM);
    assert_eq!(host.run(&Job::new(sum, "nope")), Err(RunError::NoEntry("nope".into())));
    let error = host.run(&Job { args: vec![Value::I32(1)], ..Job::new(sum, "sum") }).unwrap_err();
    assert_eq!(error.to_string(), r#"entry "sum" is (i64) -> (i64), the job gives (i32)"#);
}

#[test]
fn a_job_above_the_ceiling_is_refused() {
    let host = host();
    let sum = load(&host, SUM);
    let limits = Limits { memory: host.config().ceiling.memory * 2, ..Limits::default() };
    assert_eq!(host.run(&Job { limits, ..Job::new(sum, "sum") }), Err(RunError::AboveCeiling("memory")));
}

#[test]
fn the_same_job_burns_the_same_fuel() {
    let host = host();
    let sum = load(&host, SUM);
    let job = Job { args: vec![Value::I64(10_000)], ..Job::new(sum, "sum") };
    let (first, second) = (host.run(&job).unwrap(), host.run(&job).unwrap());
    assert!(first.fuel_used > 10_000, "{} units for 10,000 iterations", first.fuel_used);
    assert_eq!(first.fuel_used, second.fuel_used);
}

/// Reads its input and writes it back reversed.
const REVERSE: &str = r#"(module
  (import "warren" "input_len" (func $len (result i32)))
  (import "warren" "input_read" (func $read (param i32 i32) (result i32)))
  (import "warren" "output_write" (func $write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "main") (local $n i32) (local $i i32)
    (local.set $n (call $read (i32.const 0) (call $len)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (i32.const 32768) (local.get $i))
        (i32.load8_u (i32.sub (i32.sub (local.get $n) (local.get $i)) (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (drop (call $write (i32.const 32768) (local.get $n)))))"#;

#[test]
fn an_agent_reads_its_input_and_writes_its_output() {
    let host = host();
    let reverse = load(&host, REVERSE);
    let outcome = host.run(&Job { input: b"warren".to_vec(), ..Job::new(reverse, "main") }).unwrap();
    assert_eq!(outcome.output, b"nerraw");
    assert_eq!(outcome.results, []);
}

#[test]
fn log_lines_are_kept_up_to_the_limit_and_counted_past_it() {
    let host = host();
    let module = load(
        &host,
        r#"(module (import "warren" "log" (func $log (param i32 i32)))
             (memory (export "memory") 1) (data (i32.const 0) "hello")
             (func (export "main") (local $i i32)
               (loop $again (call $log (i32.const 0) (i32.const 5))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $again (i32.lt_u (local.get $i) (i32.const 5))))))"#,
    );
    let job = Job {
        grants: Grants { log: true, ..Grants::default() },
        limits: Limits { log_lines: 3, ..Limits::default() },
        ..Job::new(module, "main")
    };
    let outcome = host.run(&job).unwrap();
    assert_eq!(outcome.log, ["hello", "hello", "hello"]);
    assert_eq!(outcome.log_dropped, 2);
}

/// `put` stores its input under "k"; `get` returns the length of "k"'s value and writes it out.
const KV: &str = r#"(module
  (import "warren" "input_len" (func $len (result i32)))
  (import "warren" "input_read" (func $read (param i32 i32) (result i32)))
  (import "warren" "output_write" (func $write (param i32 i32) (result i32)))
  (import "warren" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "warren" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 0) "k")
  (func (export "put") (result i32)
    (call $put (i32.const 0) (i32.const 1) (i32.const 16) (call $read (i32.const 16) (call $len))))
  (func (export "get") (result i32) (local $n i32)
    (local.set $n (call $get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1024)))
    (if (i32.ge_s (local.get $n) (i32.const 0)) (then (drop (call $write (i32.const 16) (local.get $n)))))
    (local.get $n)))"#;

#[test]
fn agents_granted_a_bucket_share_it_and_no_other() {
    let host = host();
    let kv = load(&host, KV);
    let grant = |bucket: &str| Grants {
        kv: Some(KvGrant { bucket: bucket.into(), access: Access::ReadWrite }),
        ..Grants::default()
    };
    let put = Job { input: b"value".to_vec(), grants: grant("one"), ..Job::new(kv, "put") };
    assert_eq!(host.run(&put).unwrap().results, [Value::I32(0)]);
    assert_eq!(host.kv().get("one", b"k"), Some(b"value".to_vec()));

    let get = host.run(&Job { grants: grant("one"), ..Job::new(kv, "get") }).unwrap();
    assert_eq!((get.results, get.output), (vec![Value::I32(5)], b"value".to_vec()));
    let elsewhere = host.run(&Job { grants: grant("two"), ..Job::new(kv, "get") }).unwrap();
    assert_eq!((elsewhere.results, elsewhere.output), (vec![Value::I32(-1)], vec![]));
}

#[test]
fn a_value_too_long_for_the_store_is_refused_to_the_agent() {
    let host =
        common::host_with(HostConfig { kv: KvLimits { value: 1000, ..KvLimits::default() }, ..HostConfig::default() });
    let kv = load(&host, KV);
    let grants = Grants { kv: Some(KvGrant { bucket: "b".into(), access: Access::ReadWrite }), ..Grants::default() };
    let long = vec![b'x'; 1001];
    let job = Job { input: long, grants, ..Job::new(kv, "put") };
    assert_eq!(host.run(&job).unwrap().results, [Value::I32(-1)]);
    assert_eq!(host.kv().get("b", b"k"), None);
}
