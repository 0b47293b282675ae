//! The state machine under a virtual clock: the verbs' rules, the lease life cycle, restores,
//! and property tests of watches and expiry against simple models.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const SWEEP: Duration = Duration::from_millis(100);

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn ep(port: u16) -> Endpoint {
    Endpoint::tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn key() -> TokenKey {
    TokenKey::new([9; 32])
}

fn state(history: usize) -> (State, Instant) {
    let now = Instant::now();
    let config = Config { max_endpoints: 4, history, sweep: SWEEP };
    (State::new(config, key(), Some("admin"), now).unwrap(), now)
}

fn ports(eps: &[Endpoint]) -> Vec<u16> {
    eps.iter().map(|e| e.port).collect()
}

#[test]
fn rmi_verbs_follow_the_registry_rules() {
    let (mut s, _) = state(100);
    let web = name("web");
    assert_eq!(s.lookup(&web), Err(Error::NotBound(web.clone())));
    assert_eq!(s.bind(&web, "alice", vec![ep(1), ep(2)]), Ok(Revision(1)));
    assert_eq!(s.bind(&web, "alice", vec![ep(3)]), Err(Error::AlreadyBound(web.clone())));
    assert_eq!(s.rebind(&web, "bob", vec![ep(3)]), Err(Error::Forbidden("web".into())));
    assert_eq!(s.unbind(&web, "bob"), Err(Error::Forbidden("web".into())));
    assert_eq!(s.rebind(&web, "alice", vec![ep(2), ep(3)]), Ok(Revision(2)));
    assert_eq!(ports(&s.lookup(&web).unwrap().1.endpoints), [2, 3]);
    let events: Vec<_> = s.watch("", Revision(1)).unwrap().into_iter().map(|e| (e.kind, e.endpoint.port)).collect();
    assert_eq!(events, [(EventKind::Delete, 1), (EventKind::Put, 3)], "2 was unchanged");
    // The admin token may change any name; the owner stays alice.
    assert_eq!(s.rebind(&web, "admin", vec![ep(4)]), Ok(Revision(3)));
    assert_eq!(s.rebind(&web, "alice", vec![ep(4)]), Ok(Revision(3)), "no change, no new revision");
    assert_eq!(s.unbind(&web, "alice"), Ok(Revision(4)));
    assert_eq!(s.unbind(&web, "alice"), Err(Error::NotBound(web)));
}

#[test]
fn bad_requests_get_clear_errors() {
    let (mut s, now) = state(100);
    let web = name("web");
    assert!(matches!(s.bind(&web, "", vec![ep(1)]), Err(Error::Unauthenticated(_))), "empty token");
    assert!(matches!(s.bind(&web, &"t".repeat(257), vec![ep(1)]), Err(Error::Invalid(_))), "a token too long");
    assert!(matches!(s.bind(&web, "t", vec![]), Err(Error::Invalid(_))), "no endpoints");
    assert!(matches!(s.bind(&web, "t", vec![ep(1), ep(1)]), Err(Error::Invalid(_))), "the same endpoint twice");
    assert!(matches!(s.bind(&web, "t", (1..=5).map(ep).collect()), Err(Error::TooLarge(_))), "over max_endpoints");
    let mut fat = ep(1);
    fat.meta = (0..17).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(matches!(s.bind(&web, "t", vec![fat]), Err(Error::TooLarge(_))));
    for ttl in [Duration::from_millis(999), Duration::from_secs(24 * 3600 + 1)] {
        assert!(matches!(s.register(&web, "t", ep(1), ttl, now), Err(Error::Invalid(_))), "{ttl:?}");
    }
    assert!(matches!(s.list("a/b"), Err(Error::Invalid(_))));
    assert!(matches!(s.watch("web eu", Revision(0)), Err(Error::Invalid(_))));
    assert_eq!(s.revision(), Revision(0), "no refused request changed anything");
}

#[test]
fn names_are_dns_friendly() {
    for ok in ["a", "web", "Web", "db.eu-1", "_srv._tcp.x", &"a".repeat(63), &vec!["a".repeat(63); 4].join(".")[..251]]
    {
        assert!(Name::new(ok).is_ok(), "{ok:?}");
    }
    for bad in ["", "a..b", ".a", "a.", "a b", "é", &"a".repeat(64), &vec!["a".repeat(50); 6].join(".")] {
        assert!(Name::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn names_are_case_insensitive_and_keep_their_first_spelling() {
    let (mut s, now) = state(100);
    let (mixed, lower, upper) = (name("HelloServer"), name("helloserver"), name("HELLOSERVER"));
    assert_eq!(s.bind(&mixed, "alice", vec![ep(1)]), Ok(Revision(1)));
    let err = s.bind(&lower, "bob", vec![ep(2)]).unwrap_err();
    assert_eq!(err.to_string(), "HelloServer: already bound", "one name, shown as first spelt");
    for asked in [&mixed, &lower, &upper] {
        let (_, entry) = s.lookup(asked).unwrap();
        assert_eq!((entry.name.as_str(), ports(&entry.endpoints)), ("HelloServer", vec![1]), "{asked}");
    }
    // Writes spelt otherwise reach the same record and keep the spelling, in events too.
    assert_eq!(s.rebind(&upper, "bob", vec![ep(2)]), Err(Error::Forbidden("HelloServer".into())), "same owner");
    s.register(&lower, "alice", ep(2), Duration::from_secs(10), now).unwrap();
    s.rebind(&upper, "alice", vec![ep(3)]).unwrap();
    let dirty = s.take_dirty();
    assert_eq!(dirty.names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["HelloServer"]);
    let (_, entries) = s.list("hello").unwrap();
    assert_eq!((entries.len(), entries[0].name.as_str()), (1, "HelloServer"));
    assert_eq!(s.list("HELLO").unwrap().1, entries, "a prefix matches in any case");
    assert!(s.list("Hello").unwrap().1.iter().all(|e| e.name.as_str() == "HelloServer"));
    let events = s.watch("hELLO", Revision(0)).unwrap();
    assert_eq!(events.len(), 5, "put 1, put 2, then delete 1, delete 2, put 3: {events:?}");
    assert!(events.iter().all(|e| e.name.as_str() == "HelloServer"), "{events:?}");
    // Once the name is gone, the next write that creates it chooses the spelling again.
    s.unbind(&upper, "alice").unwrap();
    s.bind(&lower, "bob", vec![ep(4)]).unwrap();
    assert_eq!(s.lookup(&mixed).unwrap().1.name.as_str(), "helloserver");
    let dirty = s.take_dirty();
    assert_eq!(dirty.names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["helloserver"], "the spelling now");
}

#[test]
fn a_lease_lapses_between_its_ttl_and_one_sweep_later() {
    let (mut s, t0) = state(100);
    let api = name("api");
    let ttl = Duration::from_secs(10);
    let (lease, _) = s.register(&api, "svc", ep(1), ttl, t0).unwrap();
    s.poll_events();
    let due = s.poll_timeout().unwrap();
    assert!(due >= t0 + ttl && due < t0 + ttl + SWEEP, "{:?}", due - t0);
    assert!(s.expire(due - Duration::from_nanos(1)).is_empty());
    // A renewal moves the deadline a full TTL from the renewal.
    let t1 = t0 + Duration::from_secs(6);
    assert_eq!(s.renew(lease, "svc", t1), Ok(ttl));
    assert!(s.expire(due).is_empty());
    let due = s.poll_timeout().unwrap();
    assert!(due >= t1 + ttl && due < t1 + ttl + SWEEP);
    let gone = s.expire(due);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].kind, &gone[0].name), (EventKind::Delete, &api));
    assert_eq!(s.lookup(&api), Err(Error::NotBound(api.clone())), "the name went with its last endpoint");
    assert_eq!(s.renew(lease, "svc", due), Err(Error::LeaseNotFound(lease)));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn leases_share_a_name_and_release_needs_the_owner() {
    let (mut s, now) = state(100);
    let api = name("api");
    let ttl = Duration::from_secs(5);
    let (l1, _) = s.register(&api, "svc", ep(1), ttl, now).unwrap();
    let (l2, _) = s.register(&api, "svc", ep(2), ttl, now).unwrap();
    assert_eq!(s.register(&api, "other", ep(3), ttl, now), Err(Error::Forbidden("api".into())));
    assert_eq!(s.release(l1, "other"), Err(Error::Forbidden(format!("lease {l1}"))));
    s.release(l1, "svc").unwrap();
    assert_eq!(ports(&s.lookup(&api).unwrap().1.endpoints), [2]);
    // Registering the same endpoint again moves it to the new lease; the old one holds nothing.
    let (l3, _) = s.register(&api, "svc", ep(2), ttl, now).unwrap();
    s.release(l2, "admin").unwrap();
    assert_eq!(ports(&s.lookup(&api).unwrap().1.endpoints), [2], "l2 no longer held the endpoint");
    // A rebind makes the endpoints static: the lease lapsing removes nothing.
    s.rebind(&api, "svc", vec![ep(2)]).unwrap();
    s.expire(now + Duration::from_secs(60));
    assert_eq!(s.renew(l3, "svc", now), Err(Error::LeaseNotFound(l3)));
    assert_eq!(ports(&s.lookup(&api).unwrap().1.endpoints), [2]);
}

#[test]
fn watches_from_a_compacted_revision_are_refused() {
    let (mut s, _) = state(3);
    for port in 1..=4 {
        s.rebind(&name("web"), "t", vec![ep(port)]).unwrap();
    }
    // Each rebind is a delete and a put: history of 3 events keeps only revision 4.
    assert_eq!(s.watch("", Revision(2)), Err(Error::Compacted { oldest: Revision(3) }));
    assert_eq!(s.watch("", Revision(3)).unwrap().len(), 2);
    assert_eq!(s.watch("", Revision(9)), Ok(vec![]), "a future revision waits for events");
}

#[test]
fn a_restore_keeps_names_and_gives_leases_a_full_ttl() {
    let (mut s, t0) = state(100);
    s.bind(&name("web"), "alice", vec![ep(1)]).unwrap();
    let (lease, _) = s.register(&name("api"), "svc", ep(2), Duration::from_secs(10), t0).unwrap();
    s.register(&name("tmp"), "svc", ep(3), Duration::from_secs(10), t0).unwrap();
    s.unbind(&name("tmp"), "svc").unwrap();
    let dirty = s.take_dirty();
    let mut names = BTreeMap::new();
    let mut leases = BTreeMap::new();
    dirty.names.into_iter().for_each(|(n, r)| _ = r.map(|r| names.insert(n, r)));
    dirty.leases.into_iter().for_each(|(id, r)| _ = r.map(|r| leases.insert(id, r)));
    let restart = t0 + Duration::from_secs(9);
    let config = Config { sweep: SWEEP, ..Config::default() };
    let mut r = State::restore(config, key(), None, restart, names, leases, dirty.revision).unwrap();
    assert_eq!(r.list("").unwrap(), s.list("").unwrap());
    assert_eq!(r.watch("", Revision(0)), Err(Error::Compacted { oldest: s.revision() }));
    assert!(r.expire(t0 + Duration::from_secs(11)).is_empty(), "the old deadline no longer counts");
    assert!(r.poll_timeout().unwrap() >= restart + Duration::from_secs(10));
    assert_eq!(r.rebind(&name("web"), "bob", vec![ep(9)]), Err(Error::Forbidden("web".into())), "owner kept");
    let (next, _) = r.register(&name("api"), "svc", ep(4), Duration::from_secs(10), restart).unwrap();
    assert_ne!(next, lease, "lease ids are not reused");
    assert_eq!(r.renew(lease, "svc", restart), Ok(Duration::from_secs(10)), "the restored lease is renewable");
}

#[test]
fn renewing_needs_the_lease_holders_token_and_ids_are_random() {
    let (mut s, now) = state(100);
    let ttl = Duration::from_secs(5);
    let (l1, _) = s.register(&name("api"), "svc", ep(1), ttl, now).unwrap();
    let (l2, _) = s.register(&name("api"), "svc", ep(2), ttl, now).unwrap();
    assert_eq!(s.renew(l1, "mallory", now), Err(Error::Forbidden(format!("lease {l1}"))));
    assert!(matches!(s.renew(l1, "", now), Err(Error::Unauthenticated(_))));
    assert_eq!(s.renew(l1, "admin", now), Ok(ttl), "the admin may");
    // Two ids in a row share nothing a guesser could use: not consecutive, not close.
    assert!(l1.0.abs_diff(l2.0) > u128::from(u64::MAX), "{l1} then {l2}");
    // A refused renewal did not extend the lease: it lapses on time.
    let due = s.poll_timeout().unwrap();
    assert_eq!(s.expire(due + SWEEP).len(), 2);
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    Bind(u8, u8, Vec<u16>),
    Rebind(u8, u8, Vec<u16>),
    Unbind(u8, u8),
    Register(u8, u8, u16, u64),
    Renew(u64, u8),
    Release(u64, u8),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let eps = || prop::collection::vec(1u16..6, 1..4);
    prop_oneof![
        (0u8..3, 0u8..3, eps()).prop_map(|(n, t, e)| Op::Bind(n, t, e)),
        (0u8..3, 0u8..3, eps()).prop_map(|(n, t, e)| Op::Rebind(n, t, e)),
        (0u8..3, 0u8..3).prop_map(|(n, t)| Op::Unbind(n, t)),
        (0u8..3, 0u8..3, 1u16..6, 1u64..20).prop_map(|(n, t, p, s)| Op::Register(n, t, p, s)),
        (0u64..12, 0u8..3).prop_map(|(l, t)| Op::Renew(l, t)),
        (0u64..12, 0u8..3).prop_map(|(l, t)| Op::Release(l, t)),
        (0u64..15_000).prop_map(Op::Advance),
    ]
}

const NAMES: [&str; 3] = ["a", "ab", "b"];
const TOKENS: [&str; 3] = ["admin", "t1", "t2"];

/// Applies `op`; `leases` are the ids granted so far, which `Renew` and `Release` pick from
/// (an index past them names a lease that never existed).
fn apply(s: &mut State, op: &Op, now: &mut Instant, leases: &mut Vec<LeaseId>) {
    let lease = |leases: &[LeaseId], i: &u64| leases.get(*i as usize).copied().unwrap_or(LeaseId(u128::from(*i)));
    let unique = |ports: &[u16]| {
        let mut ports = ports.to_vec();
        ports.sort();
        ports.dedup();
        ports.into_iter().map(ep).collect::<Vec<_>>()
    };
    let _ = match op {
        Op::Bind(n, t, p) => s.bind(&name(NAMES[*n as usize]), TOKENS[*t as usize], unique(p)).map(drop),
        Op::Rebind(n, t, p) => s.rebind(&name(NAMES[*n as usize]), TOKENS[*t as usize], unique(p)).map(drop),
        Op::Unbind(n, t) => s.unbind(&name(NAMES[*n as usize]), TOKENS[*t as usize]).map(drop),
        Op::Register(n, t, p, secs) => {
            let ttl = Duration::from_secs(*secs);
            let granted = s.register(&name(NAMES[*n as usize]), TOKENS[*t as usize], ep(*p), ttl, *now);
            granted.map(|(id, _)| leases.push(id))
        }
        Op::Renew(l, t) => s.renew(lease(leases, l), TOKENS[*t as usize], *now).map(drop),
        Op::Release(l, t) => s.release(lease(leases, l), TOKENS[*t as usize]).map(drop),
        Op::Advance(ms) => {
            *now += Duration::from_millis(*ms);
            s.expire(*now);
            Ok(())
        }
    };
}

/// The registry rebuilt from nothing but a log of events.
fn replay(log: &[Event]) -> BTreeMap<Name, Vec<Endpoint>> {
    let mut names: BTreeMap<Name, Vec<Endpoint>> = BTreeMap::new();
    for e in log {
        let eps = names.entry(e.name.clone()).or_default();
        eps.retain(|x| x.key() != e.endpoint.key());
        if e.kind == EventKind::Put {
            eps.push(e.endpoint.clone());
        }
        if eps.is_empty() {
            names.remove(&e.name);
        }
    }
    names
}

fn sorted(mut eps: Vec<Endpoint>) -> Vec<Endpoint> {
    eps.sort_by_key(Endpoint::key);
    eps
}

proptest! {
    /// Every event goes into the log once, in revision order; `watch(prefix, from)` returns exactly
    /// the log's events after `from` under `prefix` (or `Compacted` when they are gone); and the
    /// log alone rebuilds what `list` shows.
    #[test]
    fn watches_return_exactly_the_events_after_a_revision(ops in prop::collection::vec(op(), 1..60), history in 4usize..40) {
        let (mut s, mut now) = state(history);
        let (mut log, mut leases): (Vec<Event>, Vec<LeaseId>) = (Vec::new(), Vec::new());
        for op in &ops {
            apply(&mut s, op, &mut now, &mut leases);
            log.extend(s.poll_events());
        }
        prop_assert!(log.windows(2).all(|w| w[0].revision <= w[1].revision));
        let revisions: Vec<u64> = log.iter().map(|e| e.revision.0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(revisions, (1..=s.revision().0).collect::<Vec<_>>(), "every revision has events");
        let listed: BTreeMap<Name, Vec<Endpoint>> =
            s.list("").unwrap().1.into_iter().map(|e| (e.name, sorted(e.endpoints))).collect();
        let rebuilt: BTreeMap<Name, Vec<Endpoint>> = replay(&log).into_iter().map(|(n, e)| (n, sorted(e))).collect();
        prop_assert_eq!(listed, rebuilt);
        for prefix in ["", "a", "ab", "b"] {
            for from in 0..=s.revision().0 + 1 {
                let want: Vec<&Event> =
                    log.iter().filter(|e| e.revision.0 > from && e.name.as_str().starts_with(prefix)).collect();
                match s.watch(prefix, Revision(from)) {
                    Ok(got) => prop_assert_eq!(got.iter().collect::<Vec<_>>(), want),
                    Err(Error::Compacted { oldest }) => {
                        prop_assert!(from < oldest.0);
                        prop_assert!(s.watch(prefix, oldest).is_ok());
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
    }

    /// Under a driver that sweeps when `poll_timeout` says, every lease's endpoint is removed at
    /// some time in [last renewal + TTL, last renewal + TTL + sweep), and never while it is renewed.
    #[test]
    fn leases_lapse_within_the_sweep_bound(
        leases in prop::collection::vec((1u64..30, prop::collection::vec(0u64..40_000, 0..5)), 1..8),
        start in 0u64..1000,
    ) {
        let (mut s, t0) = state(10_000);
        let t0 = t0 + Duration::from_millis(start);
        // Actions in time order: (at, lease index, is_registration).
        let mut actions = Vec::new();
        for (i, (_, renewals)) in leases.iter().enumerate() {
            actions.push((0, i, true));
            let mut at = 0;
            for gap in renewals {
                at += gap;
                actions.push((at, i, false));
            }
        }
        actions.sort();
        let mut ids = vec![None; leases.len()];
        let mut last_renewal = vec![t0; leases.len()];
        let mut removed_at = vec![None; leases.len()];
        let mut now = t0;
        let mut queue = actions.into_iter().peekable();
        loop {
            let next_action = queue.peek().map(|&(at, _, _)| t0 + Duration::from_millis(at));
            let next = match (next_action, s.poll_timeout()) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            now = now.max(next);
            for e in s.expire(now) {
                let i = usize::from(e.endpoint.port) - 1;
                removed_at[i] = Some(now);
            }
            while let Some(&(at, i, register)) = queue.peek() {
                if t0 + Duration::from_millis(at) > now {
                    break;
                }
                queue.next();
                let port = u16::try_from(i + 1).unwrap();
                if register {
                    let ttl = Duration::from_secs(leases[i].0);
                    let (id, _) = s.register(&name(&format!("n{i}")), "t", ep(port), ttl, now).unwrap();
                    ids[i] = Some(id);
                    last_renewal[i] = now;
                } else if removed_at[i].is_none() && ids[i].is_some_and(|id| s.renew(id, "t", now).is_ok()) {
                    last_renewal[i] = now;
                }
            }
        }
        for (i, (secs, _)) in leases.iter().enumerate() {
            let due = last_renewal[i] + Duration::from_secs(*secs);
            let at = removed_at[i].expect("every lease lapses in the end");
            prop_assert!(at >= due && at < due + SWEEP, "lease {i}: removed {:?} after its due time", at - due);
        }
        prop_assert_eq!(s.list("").unwrap().1, vec![]);
    }
}
