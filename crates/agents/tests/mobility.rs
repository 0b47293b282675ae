//! Strong mobility: agents frozen deep in their call stack, moved to another host and resumed
//! bit-identical; hops the agent asks for and freezes the host asks for; clones; and
//! snapshots that are damaged, forged or for other code, refused.

mod common;

use std::time::Duration;

use common::{host, operator};
use warren_agents::{
    Ended, Freezer, Grants, Host, Job, Limits, MobileError, ModuleId, ModuleSignature, Outcome, PrepareError, Resource,
    Resume, Role, RunError, Snapshot, SnapshotError, Value,
};

/// `run(depth, n, every)` recurses `depth` frames, each keeping a local of its own, then loops
/// `n` times folding its memory into a 64-bit checksum. Every `every` iterations (0: never) it
/// calls `migrate("node-b")`; at each loop header it checks `migrate_requested`, its safe
/// point. What the last `migrate` returned is kept in `role` and marks the result's top byte.
const DEEP: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (global $steps (export "steps") (mut i64) (i64.const 0))
  (global $role (export "role") (mut i32) (i32.const 0))
  (data (i32.const 16) "node-b")
  (func $run (export "run") (param $depth i32) (param $n i64) (param $every i64) (result i64)
    (local $mine i64)
    (local.set $mine (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 0x9E3779B97F4A7C15)))
    (if (result i64) (i32.eqz (local.get $depth))
      (then (call $loop (local.get $n) (local.get $every)))
      (else (i64.xor
        (i64.rotl (call $run (i32.sub (local.get $depth) (i32.const 1)) (local.get $n) (local.get $every))
                  (i64.const 7))
        (local.get $mine)))))
  (func $loop (param $n i64) (param $every i64) (result i64) (local $i i64) (local $x i64) (local $at i32)
    (local.set $x (i64.const 0xcbf29ce484222325))
    (block $done (loop $next
      (if (global.get $flag) (then (global.set $role (call $migrate (i32.const 0) (i32.const 0)))))
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (if (i64.ne (local.get $every) (i64.const 0)) (then
        (if (i32.and (i64.ne (local.get $i) (i64.const 0)) (i64.eqz (i64.rem_u (local.get $i) (local.get $every))))
          (then (global.set $role (call $migrate (i32.const 16) (i32.const 6)))))))
      (local.set $at (i32.add (i32.const 4096)
        (i32.shl (i32.wrap_i64 (i64.and (local.get $i) (i64.const 8191))) (i32.const 3))))
      (local.set $x (i64.mul (i64.xor (local.get $x) (i64.add (local.get $i) (i64.load (local.get $at))))
                             (i64.const 0x100000001b3)))
      (i64.store (local.get $at) (local.get $x))
      (global.set $steps (i64.add (global.get $steps) (i64.const 1)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (i64.xor (i64.xor (local.get $x) (global.get $steps))
             (i64.shl (i64.extend_i32_s (global.get $role)) (i64.const 56)))))"#;

/// Counts until it is frozen; once resumed it returns its count. `seen` mirrors the count, so
/// the snapshot tells what the resumed agent must return.
const COUNTER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (global $seen (export "seen") (mut i64) (i64.const 0))
  (func (export "count") (result i64) (local $i i64)
    (loop $next
      (if (global.get $flag) (then
        (if (i32.ge_s (call $migrate (i32.const 0) (i32.const 0)) (i32.const 0))
          (then (return (local.get $i))))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (global.set $seen (local.get $i))
      (br $next))
    (unreachable)))"#;

/// Logs, moves, logs again, and returns what `migrate` said.
const TRAVELLER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (import "warren" "log" (func $log (param i32 i32)))
  (import "warren" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "beforeafterfar-away")
  (func (export "main") (result i32) (local $role i32)
    (call $log (i32.const 100) (i32.const 6))
    (drop (call $out (i32.const 100) (i32.const 6)))
    (local.set $role (call $migrate (i32.const 111) (i32.const 8)))
    (call $log (i32.const 106) (i32.const 5))
    (drop (call $out (i32.const 106) (i32.const 5)))
    (local.get $role)))"#;

const DEPTH: i32 = 4;
const N: i64 = 300_000;

fn prepare(host: &Host, wat: &str) -> ModuleId {
    let bytes = wat::parse_str(wat).unwrap();
    let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
    host.prepare(&bytes, Some(&signature)).unwrap().module
}

fn deep_job(module: ModuleId, every: i64) -> Job {
    Job { args: vec![Value::I32(DEPTH), Value::I64(N), Value::I64(every)], ..Job::new(module, "run") }
}

fn frozen(ended: Ended) -> Box<Snapshot> {
    match ended {
        Ended::Frozen(snapshot) => snapshot,
        Ended::Finished(outcome) => panic!("finished without freezing: {outcome:?}"),
    }
}

fn finished(ended: Ended) -> Outcome {
    match ended {
        Ended::Finished(outcome) => outcome,
        Ended::Frozen(snapshot) => panic!("frozen again, at hop {}", snapshot.hops),
    }
}

/// Sends `snapshot` over the wire: encoded here, decoded and verified there.
fn carry(snapshot: &Snapshot) -> Snapshot {
    Snapshot::decode(&snapshot.encode()).unwrap()
}

/// Resumes `ended` on the hosts in turn, as the original, until it finishes (at most 10 hops).
fn follow(hosts: &[&Host], mut ended: Ended) -> (Outcome, u32) {
    for turn in 0..10 {
        match ended {
            Ended::Finished(outcome) => return (outcome, turn),
            Ended::Frozen(snapshot) => {
                assert_eq!(snapshot.dest, "node-b");
                let host = hosts[turn as usize % hosts.len()];
                ended = host.resume(&carry(&snapshot), &Resume::new(Role::Original, Grants::default())).unwrap();
            }
        }
    }
    panic!("still moving after 10 hops");
}

/// `result` with `role` in its loop's top byte, as it comes up through `DEPTH` frames that each
/// rotate it by 7 bits.
fn marked(result: i64, role: i32) -> i64 {
    result ^ ((role as i64) << 56).rotate_left(7 * DEPTH as u32)
}

fn result(outcome: &Outcome) -> i64 {
    match outcome.results[..] {
        [Value::I64(result)] => result,
        ref other => panic!("not one i64: {other:?}"),
    }
}

#[test]
fn preparing_asyncifies_once_per_host_and_the_same_on_every_host() {
    let (a, b) = (host(), host());
    let bytes = wat::parse_str(DEEP).unwrap();
    let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
    let first = a.prepare(&bytes, Some(&signature)).unwrap();
    assert_eq!(first.module, ModuleId::of(&bytes));
    assert_ne!(first.prepared, first.module, "the transformed code has an id of its own");
    assert!(first.prepared_bytes > first.bytes, "Asyncify adds code: {first:?}");
    assert_eq!(a.prepare(&bytes, Some(&signature)).unwrap(), first);
    assert_eq!(b.prepare(&bytes, Some(&signature)).unwrap(), first, "one Binaryen, one transform");
    assert!(matches!(a.prepare(&bytes, None), Err(PrepareError::Load(_))), "unsigned code is refused first");
}

#[test]
fn modules_whose_state_a_snapshot_could_not_hold_are_refused() {
    let host = host();
    let cases = [
        (r#"(module (memory (export "memory") 1) (func (export "f")))"#, "does not import warren.migrate"),
        (
            r#"(module (import "warren" "migrate" (func (param i32 i32) (result i32))) (func (export "f")))"#,
            "no memory",
        ),
        (
            r#"(module (import "warren" "migrate" (func (param i32 i32) (result i32))) (memory (export "memory") 1)
                (global (mut i32) (i32.const 0)))"#,
            "mutable global 0 is not exported",
        ),
        (
            r#"(module (import "warren" "migrate" (func (param i32 i32) (result i32))) (memory (export "memory") 1)
                (func $s) (start $s))"#,
            "start function",
        ),
        (
            r#"(module (import "warren" "migrate" (func (param i32 i32) (result i32))) (memory (export "memory") 1)
                (table 1 funcref) (func (drop (table.grow (ref.null func) (i32.const 1)))))"#,
            "changes a table",
        ),
    ];
    for (wat, why) in cases {
        let bytes = wat::parse_str(wat).unwrap();
        let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
        match host.prepare(&bytes, Some(&signature)) {
            Err(PrepareError::Unfit(reason)) => assert!(reason.contains(why), "{reason:?} should say {why:?}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn a_loop_deep_in_the_stack_hops_between_hosts_and_ends_bit_identical() {
    let (a, b) = (host(), host());
    let deep = prepare(&a, DEEP);
    prepare(&b, DEEP);
    let unmoved = finished(a.run_mobile(&deep_job(deep, 0), &Freezer::new()).unwrap());
    let plain = a.run(&deep_job(deep, 0)).unwrap();
    assert_eq!(unmoved.results, plain.results, "Asyncify changes no result");

    // Frozen at N/3 and 2N/3, 4 frames deep: A → B → A.
    let first = frozen(a.run_mobile(&deep_job(deep, N / 3), &Freezer::new()).unwrap());
    assert_eq!((first.dest.as_str(), first.hops), ("node-b", 1));
    assert!(first.globals.contains(&("steps".into(), Value::I64(N / 3))), "{:?}", first.globals);
    // Only the pages the loop wrote (4 KiB pages 1 to 16) travel: not page 0, which holds the
    // data segment unchanged, nor the 15 pages still zero.
    assert_eq!(first.dirty, (1..=16).collect::<Vec<u32>>());
    assert_eq!((first.memory_pages, first.memory_bytes()), (2, 16 * 4096));
    let (moved, hops) = follow(&[&b, &a], Ended::Frozen(first));
    assert_eq!(hops, 2);
    assert_eq!(result(&moved), result(&unmoved), "bit-identical to the unmoved run");
    // Fuel travels: had it started afresh on each host, the last third would be all it counts.
    // The moving run does a little more (its hop test each iteration, the unwinds and rewinds).
    let (moved_fuel, unmoved_fuel) = (moved.fuel_used, unmoved.fuel_used);
    assert!(unmoved_fuel < moved_fuel && moved_fuel < unmoved_fuel * 3 / 2, "{moved_fuel} against {unmoved_fuel}");
}

#[test]
fn a_plain_run_declines_every_migrate() {
    let host = host();
    let deep = prepare(&host, DEEP);
    let unmoved = host.run(&deep_job(deep, 0)).unwrap();
    let declined = host.run(&deep_job(deep, N / 3)).unwrap();
    assert_eq!(result(&declined), marked(result(&unmoved), -1), "migrate returned -1 and nothing moved");
}

#[test]
fn a_snapshot_restored_twice_gives_two_copies_that_differ_only_in_what_migrate_said() {
    let (a, b, c) = (host(), host(), host());
    let deep = prepare(&a, DEEP);
    prepare(&b, DEEP);
    prepare(&c, DEEP);
    let unmoved = finished(a.run_mobile(&deep_job(deep, 0), &Freezer::new()).unwrap());
    // One move, at 2N/3.
    let snapshot = carry(&frozen(a.run_mobile(&deep_job(deep, N * 2 / 3), &Freezer::new()).unwrap()));
    let original = finished(b.resume(&snapshot, &Resume::new(Role::Original, Grants::default())).unwrap());
    let clone = finished(c.resume(&snapshot, &Resume::new(Role::Clone, Grants::default())).unwrap());
    assert_eq!(result(&original), result(&unmoved));
    assert_eq!(result(&clone), marked(result(&unmoved), 1), "the clone heard 1 from migrate, and only that differs");
    let stayed = finished(a.resume(&snapshot, &Resume::new(Role::Stayed, Grants::default())).unwrap());
    assert_eq!(result(&stayed), marked(result(&unmoved), -1));
}

#[test]
fn the_host_freezes_an_agent_at_its_next_safe_point() {
    let (a, b) = (host(), host());
    let counter = prepare(&a, COUNTER);
    prepare(&b, COUNTER);
    let job =
        Job { limits: Limits { wall: Duration::from_secs(5), ..Limits::default() }, ..Job::new(counter, "count") };

    // Asked before it starts: it stops at its first safe point.
    let early = Freezer::new();
    early.freeze();
    let snapshot = frozen(a.run_mobile(&job, &early).unwrap());
    assert_eq!(snapshot.dest, "", "the host froze it, the agent named no destination");
    assert!(snapshot.globals.contains(&("seen".into(), Value::I64(0))));

    // Asked while it runs (it would count until its wall-time limit otherwise): the next tick
    // raises its flag.
    let freezer = Freezer::new();
    let snapshot = std::thread::scope(|scope| {
        let running = scope.spawn(|| a.run_mobile(&job, &freezer));
        freezer.freeze();
        frozen(running.join().unwrap().unwrap())
    });
    let Some((_, Value::I64(seen))) = snapshot.globals.iter().find(|(name, _)| name == "seen").cloned() else {
        panic!("no seen in {:?}", snapshot.globals)
    };
    assert_eq!(
        snapshot.globals.iter().find(|(name, _)| name == "migrate_requested"),
        Some(&("migrate_requested".into(), Value::I32(0)))
    );
    let resumed = finished(b.resume(&carry(&snapshot), &Resume::new(Role::Original, Grants::default())).unwrap());
    assert_eq!(resumed.results, [Value::I64(seen)], "the count in its frame came along");
}

#[test]
fn an_agent_that_may_move_is_held_to_its_wall_time_and_fuel() {
    let host = host();
    let counter = prepare(&host, COUNTER);
    let job = |limits| Job { limits, ..Job::new(counter, "count") };
    // Counted by the tick callback that also raises the flag: nobody asks, so it counts on.
    let wall = Duration::from_millis(50);
    let slow = job(Limits { wall, fuel: 10_000_000_000, ..Limits::default() });
    assert_eq!(host.run_mobile(&slow, &Freezer::new()), Err(MobileError::Run(RunError::Deadline(wall))));
    let hungry = job(Limits { fuel: 1_000_000, ..Limits::default() });
    assert_eq!(host.run_mobile(&hungry, &Freezer::new()), Err(MobileError::Run(RunError::OutOfFuel(1_000_000))));
}

#[test]
fn output_log_and_capabilities_travel_and_are_rebound_by_name() {
    let (a, b) = (host(), host());
    let traveller = prepare(&a, TRAVELLER);
    prepare(&b, TRAVELLER);
    let log = Grants { log: true, ..Grants::default() };
    let snapshot =
        frozen(a.run_mobile(&Job { grants: log.clone(), ..Job::new(traveller, "main") }, &Freezer::new()).unwrap());
    assert_eq!(snapshot.dest, "far-away");
    assert_eq!(snapshot.resources, [Resource::Log]);
    let snapshot = carry(&snapshot);

    let refused = b.resume(&snapshot, &Resume::new(Role::Original, Grants::default()));
    assert_eq!(refused, Err(MobileError::NotAllowed(Resource::Log)));
    assert_eq!(
        refused.unwrap_err().to_string(),
        "the agent holds the log capability, which this host does not allow it"
    );

    let arrived = finished(b.resume(&snapshot, &Resume::new(Role::Original, log)).unwrap());
    assert_eq!(arrived.results, [Value::I32(0)]);
    assert_eq!(arrived.log, ["before", "after"]);
    assert_eq!(arrived.output, b"beforeafter");
}

#[test]
fn damaged_truncated_forged_and_foreign_snapshots_are_refused() {
    let (a, b) = (host(), host());
    let deep = prepare(&a, DEEP);
    prepare(&b, DEEP);
    let snapshot = *frozen(a.run_mobile(&deep_job(deep, N / 3), &Freezer::new()).unwrap());
    let bytes = snapshot.encode();

    assert_eq!(Snapshot::decode(b"GET / HTTP/1.1"), Err(SnapshotError::NotASnapshot));
    assert!(matches!(Snapshot::decode(&bytes[..bytes.len() - 1]), Err(SnapshotError::Truncated { .. })));
    assert!(matches!(Snapshot::decode(&bytes[..40]), Err(SnapshotError::Truncated { .. })));
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    assert_eq!(Snapshot::decode(&flipped), Err(SnapshotError::Damaged));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Snapshot::decode(&longer), Err(SnapshotError::Damaged));

    // Forged with a matching hash: each is caught by what the host checks itself.
    let resume = Resume::new(Role::Original, Grants::default());
    let forged = |change: &dyn Fn(&mut Snapshot)| {
        let mut forged = snapshot.clone();
        change(&mut forged);
        Snapshot::decode(&forged.encode()).map(|forged| b.resume(&forged, &resume))
    };
    let other = ModuleId::of(b"other code");
    assert_eq!(
        forged(&|s| s.prepared = other),
        Ok(Err(MobileError::PreparedDifferently { module: deep, here: snapshot.prepared, snapshot: other }))
    );
    assert_eq!(forged(&|s| s.module = other), Ok(Err(MobileError::NotPrepared(other))));
    let secrets = Resource::Kv {
        bucket: "secrets".into(),
        write: true,
        bind: Default::default(),
        attachment: warren_agents::Attachment::Fastened,
        at: warren_agents::binding::KvAt::Here,
    };
    assert_eq!(forged(&|s| s.resources.push(secrets.clone())), Ok(Err(MobileError::NotAllowed(secrets.clone()))));
    assert!(matches!(forged(&|s| s.dirty.push(1 << 20)), Err(SnapshotError::Inconsistent(_))));
    assert!(matches!(forged(&|s| s.stack.truncate(4)), Err(SnapshotError::Inconsistent(_))));
    assert!(matches!(forged(&|s| s.limits.fuel = u64::MAX), Ok(Err(MobileError::Run(RunError::AboveCeiling("fuel"))))));
    // A host that never prepared the module knows nothing to resume it into.
    assert_eq!(host().resume(&snapshot, &resume), Err(MobileError::NotPrepared(deep)));
}
