//! The resource-binding table, cell by cell, between two hosts in this process: an agent holding
//! a bucket or a file freezes on A, leaves as its cell says (`Host::dispatch`: moved, copied,
//! referenced or left to be rebound), is checked and resumed on B, and shows what it sees there.
//! A serves the agent protocol on loopback, as a node does, so that references reach back to it.
//! Needs `wasm-opt`.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use common::operator;
use warren_agents::binding::{FileAt, KvAt, Reference};
use warren_agents::session::AgentService;
use warren_agents::{
    Access, Action, Attachment, Bind, Binding, Ended, FileGrant, Freezer, Grants, Host, HostConfig, Job, KvGrant,
    ModuleId, ModuleSignature, Offers, Overrides, Resource, Resume, Role, Snapshot, Trust, Value,
};
use warren_models::{Model, ServeConfig, Shutdown, serve_until};

/// Shows its bucket's `k` (the value, `absent`, or `error:` and why), hops to the destination
/// its input names, shows `k` again there, writes `from-b` to it, and returns what `migrate`
/// said (0 moved, -1 stayed). `seed` sets `k` to its input; `peek` shows it.
const KV_AGENT: &str = include_str!("guests/kv_agent.wat");

/// Shows the first bytes of its file (or `error:` and why), hops to the destination its input
/// names, shows them again there, and returns what `migrate` said.
const FILE_AGENT: &str = include_str!("guests/file_agent.wat");

/// A host trusting the operator, offering `cache` (unattached), `ledger` (fastened) and the
/// file `motd`, which says `motd of NAME`.
fn host(name: &str) -> Arc<Host> {
    let dir = std::env::temp_dir().join(format!("warren-binding-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let motd = dir.join("motd");
    std::fs::write(&motd, format!("motd of {name}")).unwrap();
    let offers = Offers {
        buckets: [("cache".into(), Attachment::Unattached), ("ledger".into(), Attachment::Fastened)].into(),
        files: [("motd".to_owned(), motd)].into(),
    };
    let trust = Trust::new().trust_key(operator().verifying_key().to_bytes()).unwrap();
    Arc::new(Host::new(HostConfig { trust, offers, ..HostConfig::default() }).unwrap())
}

/// `host` serving the agent protocol on a loopback port of its own, its address set for the
/// references it issues; stopped when dropped.
struct Served {
    host: Arc<Host>,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    fn start(host: Arc<Host>) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        host.set_address(listener.local_addr().unwrap().to_string());
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let service = AgentService::new(host.clone(), warren_proto::Limits::default());
        let (config, stop) = (ServeConfig::for_model(Model::Thread), shutdown.clone());
        let thread = std::thread::spawn(move || {
            serve_until(Model::Thread, service, listener, &config, stop).unwrap();
        });
        Served { host, shutdown, thread: Some(thread) }
    }

    /// Stops serving: the origin is gone.
    fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

fn prepare(hosts: &[&Host], wat: &str) -> ModuleId {
    let bytes = wat::parse_str(wat).unwrap();
    let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
    let mut module = None;
    for host in hosts {
        module = Some(host.prepare(&bytes, Some(&signature)).unwrap().module);
    }
    module.unwrap()
}

fn kv_grants(bucket: &str, binding: Binding, action: Option<Action>) -> Grants {
    Grants {
        kv: Some(KvGrant { bucket: bucket.into(), access: Access::ReadWrite }),
        kv_bind: Bind { binding, action },
        ..Grants::default()
    }
}

fn file_grants(binding: Binding, action: Option<Action>) -> Grants {
    Grants { file: Some(FileGrant { name: "motd".into(), bind: Bind { binding, action } }), ..Grants::default() }
}

/// What an agent saw and returned.
#[derive(Debug, PartialEq)]
struct Seen {
    output: String,
    role: i32,
}

fn seen(ended: Ended) -> Seen {
    let Ended::Finished(outcome) = ended else { panic!("frozen again") };
    let [Value::I32(role)] = outcome.results[..] else { panic!("{:?}", outcome.results) };
    Seen { output: String::from_utf8(outcome.output).unwrap(), role }
}

/// Runs `module`'s `hop` on A with `grants` until it freezes.
fn freeze(a: &Host, module: ModuleId, grants: Grants) -> Snapshot {
    let job = Job { grants, input: b"b".to_vec(), ..Job::new(module, "hop") };
    match a.run_mobile(&job, &Freezer::new()).unwrap() {
        Ended::Frozen(snapshot) => *snapshot,
        Ended::Finished(outcome) => panic!("finished without moving: {outcome:?}"),
    }
}

/// Moves `snapshot` from A to B as a roster does: dispatched on A, sent as bytes, checked on B,
/// then the departure settled on A, and resumed on B.
fn hop(a: &Host, b: &Host, snapshot: &Snapshot, asked: Overrides) -> Seen {
    let departure = a.dispatch(snapshot, &asked, false).unwrap();
    let arrived = Snapshot::decode(&departure.snapshot.encode()).unwrap();
    b.check_resources(&arrived.resources, &Grants::default()).unwrap();
    a.departed(&departure);
    seen(b.resume(&arrived, &Resume::new(Role::Original, Grants::default())).unwrap())
}

fn value(host: &Host, bucket: &str) -> Option<String> {
    host.kv().get(bucket, b"k").map(|v| String::from_utf8(v).unwrap())
}

/// A and B, A served; A's `cache` and `ledger` hold `a-cache` and `a-ledger`, B's `ledger`
/// holds `b-ledger` and B's `cache` is empty.
fn pair() -> (Served, Arc<Host>) {
    let (a, b) = (Served::start(host("a")), host("b"));
    a.host.kv().put("cache", b"k", b"a-cache").unwrap();
    a.host.kv().put("ledger", b"k", b"a-ledger").unwrap();
    b.kv().put("ledger", b"k", b"b-ledger").unwrap();
    (a, b)
}

#[test]
fn the_table_gives_each_cell_its_default_first_and_its_alternatives() {
    use Action::*;
    use warren_agents::binding::actions;
    let cells = [
        (Binding::Identifier, Attachment::Unattached, &[Move, Reference][..]),
        (Binding::Identifier, Attachment::Fastened, &[Reference, Move]),
        (Binding::Identifier, Attachment::Fixed, &[Reference]),
        (Binding::Value, Attachment::Unattached, &[Copy, Move, Reference]),
        (Binding::Value, Attachment::Fastened, &[Reference, Copy]),
        (Binding::Value, Attachment::Fixed, &[Reference]),
        (Binding::Type, Attachment::Unattached, &[Rebind, Move, Copy]),
        (Binding::Type, Attachment::Fastened, &[Rebind, Reference, Copy]),
        (Binding::Type, Attachment::Fixed, &[Rebind, Reference]),
    ];
    for (binding, attachment, expected) in cells {
        assert_eq!(actions(binding, attachment), expected, "{binding:?} × {attachment:?}");
    }
    let bind = Bind { binding: Binding::Identifier, action: None };
    assert_eq!(bind.action(Attachment::Fixed, None), Ok(Reference));
    assert_eq!(
        bind.action(Attachment::Fixed, Some(Copy)).unwrap_err(),
        "a resource bound by identifier and fixed cannot copy: its actions are ref"
    );
}

#[test]
fn by_identifier_unattached_the_bucket_moves_and_leaves_its_origin() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Identifier, None));
    let arrived = hop(&a.host, &b, &snapshot, Overrides::default());
    assert_eq!(arrived, Seen { output: "a-cache|a-cache|".into(), role: 0 });
    assert_eq!(value(&a.host, "cache"), None, "moved away from A");
    assert_eq!(value(&b, "cache").as_deref(), Some("from-b"), "B's bucket is the one that moved");

    // A moved bucket does not overwrite one that holds anything: B's is refused.
    a.host.kv().put("cache", b"k", b"again").unwrap();
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Identifier, None));
    let departure = a.host.dispatch(&snapshot, &Overrides::default(), false).unwrap();
    let refused = b.check_resources(&departure.snapshot.resources, &Grants::default()).unwrap_err();
    assert!(refused.contains("is not empty"), "{refused}");
    a.host.withdraw(&departure);
    assert_eq!(value(&a.host, "cache").as_deref(), Some("again"), "an agent that did not leave took nothing");

    // The alternative, a global reference, asked by the agent itself.
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Identifier, Some(Action::Reference)));
    assert_eq!(hop(&a.host, &b, &snapshot, Overrides::default()).output, "again|again|");
    assert_eq!(value(&a.host, "cache").as_deref(), Some("from-b"), "written on A through the reference");
}

#[test]
fn by_identifier_fastened_the_agent_reaches_the_origins_live_bucket_until_the_origin_is_gone() {
    let (mut a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    let snapshot = freeze(&a.host, module, kv_grants("ledger", Binding::Identifier, None));
    let departure = a.host.dispatch(&snapshot, &Overrides::default(), false).unwrap();
    let Some(Resource::Kv { at: KvAt::Remote(reference), .. }) = departure.snapshot.resources.first() else {
        panic!("{:?}", departure.snapshot.resources)
    };
    assert_eq!(reference.origin, a.host.address().unwrap());
    // Changed on A after the agent left: the agent sees the live value, not a copy.
    a.host.kv().put("ledger", b"k", b"a-live").unwrap();
    let arrived = Snapshot::decode(&departure.snapshot.encode()).unwrap();
    let seen_b = seen(b.resume(&arrived, &Resume::new(Role::Original, Grants::default())).unwrap());
    assert_eq!(seen_b, Seen { output: "a-ledger|a-live|".into(), role: 0 });
    assert_eq!(value(&a.host, "ledger").as_deref(), Some("from-b"), "its write went to A");
    assert_eq!(value(&b, "ledger").as_deref(), Some("b-ledger"), "B's own bucket untouched");

    // A token A never issued is refused by A; the agent hears why, and the host carries on.
    let mut forged = arrived.clone();
    let Some(Resource::Kv { at: KvAt::Remote(Reference { token, .. }), .. }) = forged.resources.first_mut() else {
        unreachable!()
    };
    token[0] ^= 1;
    let forged = Snapshot::decode(&forged.encode()).unwrap();
    let refused = seen(b.resume(&forged, &Resume::new(Role::Clone, Grants::default())).unwrap());
    assert!(refused.output.starts_with("a-ledger|error:the origin 127.0.0.1:"), "{}", refused.output);
    assert!(refused.output.contains("refused the call: no such reference"), "{}", refused.output);

    // The origin gone: each call returns -3 to the agent, and error_read says why.
    a.stop();
    let gone = seen(b.resume(&arrived, &Resume::new(Role::Clone, Grants::default())).unwrap());
    assert!(gone.output.starts_with("a-ledger|error:the origin cannot be reached: "), "{}", gone.output);
    assert_eq!(gone.role, 1);
}

#[test]
fn by_identifier_fastened_moves_when_the_order_asks_for_the_alternative() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    b.kv().clear("ledger");
    let snapshot = freeze(&a.host, module, kv_grants("ledger", Binding::Identifier, None));
    let asked = Overrides { kv: Some(Action::Move), file: None };
    assert_eq!(hop(&a.host, &b, &snapshot, asked).output, "a-ledger|a-ledger|");
    assert_eq!((value(&a.host, "ledger"), value(&b, "ledger").as_deref()), (None, Some("from-b")));
}

#[test]
fn by_value_unattached_the_agent_carries_a_copy_and_neither_bucket_changes() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    b.kv().put("cache", b"k", b"b-cache").unwrap();
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Value, None));
    assert_eq!(hop(&a.host, &b, &snapshot, Overrides::default()).output, "a-cache|a-cache|");
    assert_eq!(value(&a.host, "cache").as_deref(), Some("a-cache"), "the origin keeps its bucket");
    assert_eq!(value(&b, "cache").as_deref(), Some("b-cache"), "the copy is the agent's own, not B's");
}

#[test]
fn by_value_fastened_is_a_global_reference_or_a_copy_when_asked() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    let snapshot = freeze(&a.host, module, kv_grants("ledger", Binding::Value, None));
    assert_eq!(hop(&a.host, &b, &snapshot, Overrides::default()).output, "a-ledger|a-ledger|");
    assert_eq!(value(&a.host, "ledger").as_deref(), Some("from-b"), "written through the reference");

    let snapshot = freeze(&a.host, module, kv_grants("ledger", Binding::Value, Some(Action::Copy)));
    assert_eq!(hop(&a.host, &b, &snapshot, Overrides::default()).output, "from-b|from-b|");
    assert_eq!(value(&a.host, "ledger").as_deref(), Some("from-b"));
    assert_eq!(value(&b, "ledger").as_deref(), Some("b-ledger"));
}

#[test]
fn by_type_buckets_are_rebound_to_the_destinations_own() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    b.kv().put("cache", b"k", b"b-cache").unwrap();
    for (bucket, there) in [("cache", "b-cache"), ("ledger", "b-ledger")] {
        let snapshot = freeze(&a.host, module, kv_grants(bucket, Binding::Type, None));
        let seen = hop(&a.host, &b, &snapshot, Overrides::default());
        assert_eq!(seen.output, format!("a-{bucket}|{there}|"), "{bucket}");
        assert_eq!(value(&b, bucket).as_deref(), Some("from-b"), "{bucket}: B's own was written");
        assert_eq!(value(&a.host, bucket), Some(format!("a-{bucket}")), "{bucket}");
    }
    // A destination that does not offer the bucket refuses the agent.
    let bare = Host::new(HostConfig::default()).unwrap();
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Type, None));
    let refused = bare.check_resources(&snapshot.resources, &Grants::default()).unwrap_err();
    assert_eq!(
        refused,
        r#"the agent holds the kv bucket "cache" (read-write) capability, which this host does not allow it"#
    );
}

#[test]
fn a_fixed_file_is_reached_through_its_origin_by_identifier_and_value_and_rebound_by_type() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], FILE_AGENT);
    for binding in [Binding::Identifier, Binding::Value] {
        let snapshot = freeze(&a.host, module, file_grants(binding, None));
        let departure = a.host.dispatch(&snapshot, &Overrides::default(), false).unwrap();
        assert!(matches!(departure.snapshot.resources[..], [Resource::File { at: FileAt::Remote(_), .. }]));
        a.host.withdraw(&departure);
        let seen = hop(&a.host, &b, &snapshot, Overrides::default());
        assert_eq!(seen, Seen { output: "motd of a|motd of a|".into(), role: 0 }, "{binding:?}");
    }
    let snapshot = freeze(&a.host, module, file_grants(Binding::Type, None));
    assert_eq!(hop(&a.host, &b, &snapshot, Overrides::default()).output, "motd of a|motd of b|");
    // The alternative of by type × fixed: a reference to A's.
    let asked = Overrides { file: Some(Action::Reference), kv: None };
    assert_eq!(hop(&a.host, &b, &snapshot, asked).output, "motd of a|motd of a|");
    // A fixed resource cannot be copied: the move is refused, before anything is sent.
    let copy = Overrides { file: Some(Action::Copy), kv: None };
    let refused = a.host.dispatch(&snapshot, &copy, false).unwrap_err();
    assert_eq!(refused, r#"file "motd": a resource bound by type and fixed cannot copy: its actions are rebind, ref"#);
    assert!(a.host.references().len() >= 2);
}

#[test]
fn a_clone_never_takes_a_moved_bucket_from_the_agent_that_stays() {
    let (a, b) = pair();
    let module = prepare(&[&a.host, &b], KV_AGENT);
    let snapshot = freeze(&a.host, module, kv_grants("cache", Binding::Identifier, None));
    let departure = a.host.dispatch(&snapshot, &Overrides::default(), true).unwrap();
    assert!(matches!(departure.snapshot.resources[..], [Resource::Kv { at: KvAt::Remote(_), .. }]));
    a.host.departed(&departure);
    assert_eq!(value(&a.host, "cache").as_deref(), Some("a-cache"));
}
