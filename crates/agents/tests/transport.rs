//! Snapshots between nodes, through a node's roster (what the agent protocol's `Arrive`,
//! `Wait` and `Order` call): an arrival is checked (hash, module, signature, code) before the
//! agent is taken; one without its module is asked for it; a good one resumes and finishes.
//! Needs `wasm-opt`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{host, operator};
use warren_agents::roster::{Roster, resolve_address};
use warren_agents::trust::order_message;
use warren_agents::wire::{Arrival, End, Order, Response, signature_to};
use warren_agents::{Ended, Freezer, Grants, Job, ModuleId, ModuleSignature, Snapshot, Value};

/// Counts until it is frozen; once resumed it returns its count times ten plus what `migrate`
/// told it (0 moved, 1 a clone).
const COUNTER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (func (export "count") (result i64) (local $i i64) (local $role i32)
    (loop $next
      (if (global.get $flag) (then
        (local.set $role (call $migrate (i32.const 0) (i32.const 0)))
        (if (i32.ge_s (local.get $role) (i32.const 0))
          (then (return (i64.add (i64.mul (local.get $i) (i64.const 10)) (i64.extend_i32_s (local.get $role))))))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next))
    (unreachable)))"#;

const OTHER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "count") (result i64) (drop (call $migrate (i32.const 0) (i32.const 0))) (i64.const 0)))"#;

fn signed(wat: &str) -> (Vec<u8>, ModuleSignature) {
    let bytes = wat::parse_str(wat).unwrap();
    let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
    (bytes, signature)
}

/// COUNTER frozen on a host of its own before it counted: its module, signature and snapshot.
fn frozen() -> (Vec<u8>, ModuleSignature, Snapshot) {
    let (bytes, signature) = signed(COUNTER);
    let origin = host();
    let module = origin.prepare(&bytes, Some(&signature)).unwrap().module;
    let early = Freezer::new();
    early.freeze();
    match origin.run_mobile(&Job::new(module, "count"), &early).unwrap() {
        Ended::Frozen(snapshot) => (bytes, signature, *snapshot),
        Ended::Finished(outcome) => panic!("it should have frozen: {outcome:?}"),
    }
}

fn roster() -> Arc<Roster> {
    Roster::new(Arc::new(host()), Grants { clock: true, log: true, ..Grants::default() }, Arc::new(resolve_address))
}

fn arrival(snapshot: Vec<u8>, module: Option<&[u8]>, signature: Option<&ModuleSignature>) -> Arrival {
    Arrival { snapshot, module: module.map(<[u8]>::to_vec), signature: signature_to(signature), clone: false }
}

fn refused(response: Response) -> String {
    match response {
        Response::Refused(reason) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_arrival_is_checked_before_it_is_taken_and_then_resumes_to_its_end() {
    let (bytes, signature, snapshot) = frozen();
    let sealed = snapshot.encode();
    let node = roster();

    // Without the module, on a node that has never seen it: it asks for it.
    assert_eq!(node.arrive(arrival(sealed.clone(), None, Some(&signature))), Response::NeedModule);

    let mut forged = sealed.clone();
    let middle = forged.len() / 2;
    forged[middle] ^= 1;
    let reason = refused(node.arrive(arrival(forged, Some(&bytes), Some(&signature))));
    assert!(reason.contains("damaged or forged"), "{reason}");

    let truncated = sealed[..sealed.len() - 40].to_vec();
    let reason = refused(node.arrive(arrival(truncated, Some(&bytes), Some(&signature))));
    assert!(reason.contains("the snapshot is truncated"), "{reason}");

    let reason = refused(node.arrive(arrival(b"hello".to_vec(), Some(&bytes), Some(&signature))));
    assert!(reason.contains("not a warren snapshot"), "{reason}");

    let (other, other_signature) = signed(OTHER);
    let reason = refused(node.arrive(arrival(sealed.clone(), Some(&other), Some(&other_signature))));
    assert!(reason.contains("the module sent is") && reason.contains("but the snapshot was taken from"), "{reason}");

    let reason = refused(node.arrive(arrival(sealed.clone(), Some(&bytes), None)));
    assert!(reason.contains("is not signed"), "{reason}");
    let stranger = ModuleSignature::sign(&ModuleId::of(&bytes), &warren_agents::SigningKey::from_bytes(&[9; 32]));
    let reason = refused(node.arrive(arrival(sealed.clone(), Some(&bytes), Some(&stranger))));
    assert!(reason.contains("does not trust"), "{reason}");
    assert!(node.list().is_empty(), "nothing refused was taken");

    let Response::Started(id) = node.arrive(arrival(sealed.clone(), Some(&bytes), Some(&signature))) else {
        panic!("the good arrival starts")
    };
    // The snapshot was taken before the first count; resumed as the agent itself (0).
    match node.wait(id, Duration::from_secs(10)) {
        End::Finished(outcome) => assert_eq!(outcome.results, [Value::I64(0)]),
        other => panic!("{other:?}"),
    }
    let listed = node.list();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].module, listed[0].hops), (id, ModuleId::of(&bytes).0, 1));
    assert_eq!(listed[0].state, "finished");

    // Now it has the module: an arrival without it is taken, still with its signature checked.
    let reason = refused(node.arrive(arrival(sealed.clone(), None, None)));
    assert!(reason.contains("is not signed"), "{reason}");
    let Response::Started(again) = node.arrive(Arrival { clone: true, ..arrival(sealed, None, Some(&signature)) })
    else {
        panic!("the second arrival starts")
    };
    match node.wait(again, Duration::from_secs(10)) {
        End::Finished(outcome) => assert_eq!(outcome.results, [Value::I64(1)], "a clone is told it is one"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_snapshot_for_code_prepared_otherwise_or_over_the_ceiling_is_refused() {
    let (bytes, signature, snapshot) = frozen();
    let node = roster();
    let mut other_code = snapshot.clone();
    other_code.prepared = ModuleId([1; 32]);
    let reason = refused(node.arrive(arrival(other_code.encode(), Some(&bytes), Some(&signature))));
    assert!(reason.contains("but the snapshot was taken from"), "{reason}");

    let mut greedy = snapshot;
    greedy.limits.fuel = u64::MAX;
    let reason = refused(node.arrive(arrival(greedy.encode(), Some(&bytes), Some(&signature))));
    assert!(reason.contains("fuel limit is above this host's ceiling"), "{reason}");
}

#[test]
fn an_order_needs_a_trusted_signature_and_a_running_agent() {
    let node = roster();
    let unsigned = Order { id: 1, dest: "127.0.0.1:9".into(), clone: false, signature: None, bind: Default::default() };
    assert!(node.order(&unsigned).unwrap_err().contains("not signed"));
    let message = order_message(1, "127.0.0.1:9", false);
    let signature = ModuleSignature::sign_order(&message, &operator());
    let signed = Order { signature: signature_to(Some(&signature)), ..unsigned.clone() };
    assert_eq!(node.order(&signed).unwrap_err(), "no agent 1 on this host");
    let elsewhere = Order { dest: "127.0.0.1:10".into(), ..signed };
    assert!(node.order(&elsewhere).unwrap_err().contains("does not verify"));
    assert!(matches!(node.wait(1, Duration::ZERO), End::Failed(reason) if reason == "no agent 1 on this host"));
}
