//! The pool through its public API: rotation, health, slow start, draining and the policies
//! that look at the request.

use std::time::{Duration, Instant};

use warren_balance::{Backend, BackendId, Change, CheckConfig, ConfigError, Policy, Pool, PoolConfig, Request, State};

fn backend(port: u16) -> Backend {
    Backend::new(format!("127.0.0.1:{port}"))
}

fn picks(pool: &mut Pool, request: &Request<'_>, now: Instant, n: usize) -> Vec<BackendId> {
    (0..n)
        .map(|_| {
            let id = pool.pick(request, now).unwrap();
            pool.release(id);
            id
        })
        .collect()
}

#[test]
fn a_backend_failing_its_checks_leaves_rotation_and_rises_back() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig::default()).unwrap();
    let a = pool.add(backend(1), t0);
    let b = pool.add(backend(2), t0);
    let mut now = t0;
    let check = |pool: &mut Pool, now: Instant, a_ok: bool| {
        let mut changes = Vec::new();
        while let Some(id) = pool.poll_check(now) {
            changes.extend(pool.check_done(id, now, id != a || a_ok).map(|c| (id, c)));
        }
        changes
    };
    assert!(check(&mut pool, now, true).is_empty());
    for round in 1..=3 {
        now = pool.poll_timeout().unwrap();
        let changes = check(&mut pool, now, false);
        assert_eq!(changes.is_empty(), round < 3, "round {round}: {changes:?}");
    }
    assert_eq!(now - t0, Duration::from_secs(6), "out within inter × fall");
    assert_eq!(pool.state(a, now), Some(State::Down));
    assert_eq!(picks(&mut pool, &Request::default(), now, 4), [b, b, b, b]);
    for _ in 0..2 {
        now = pool.poll_timeout().unwrap();
        check(&mut pool, now, true);
    }
    assert_eq!(pool.state(a, now), Some(State::Up));
}

#[test]
fn a_check_that_never_answers_fails_at_its_deadline() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig::default()).unwrap();
    let a = pool.add(backend(1), t0);
    assert_eq!(pool.poll_check(t0), Some(a));
    assert_eq!(pool.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(pool.handle_timeout(t0 + Duration::from_secs(2)), [(a, Change::Down)]);
}

#[test]
fn slow_start_ramps_a_risen_backend_from_a_tenth() {
    let t0 = Instant::now();
    let config = PoolConfig {
        policy: Policy::Weighted,
        check: None,
        slow_start: Some(Duration::from_secs(10)),
        ..PoolConfig::default()
    };
    let mut pool = Pool::new(config).unwrap();
    let old = pool.add(backend(1), t0);
    let late = t0 + Duration::from_secs(100);
    let new = pool.add(backend(2), late);
    let share =
        |pool: &mut Pool, at| picks(pool, &Request::default(), at, 1100).iter().filter(|&&id| id == new).count();
    assert_eq!(share(&mut pool, late), 100, "10 % of the weight: 1 pick in 11");
    assert_eq!(share(&mut pool, late + Duration::from_secs(5)), 367, "half the weight: 1 in 3");
    assert_eq!(share(&mut pool, late + Duration::from_secs(10)), 550, "full weight");
    assert!(pool.ids().any(|id| id == old));
}

#[test]
fn draining_takes_no_new_connection_and_removal_waits_for_the_open_ones() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig { check: None, ..PoolConfig::default() }).unwrap();
    let a = pool.add(backend(1), t0);
    let b = pool.add(backend(2), t0);
    assert_eq!(pool.pick(&Request::default(), t0), Some(a));
    assert!(pool.remove(a));
    assert_eq!(pool.state(a, t0), Some(State::Draining { open: 1 }));
    assert!(!pool.is_drained(a));
    assert_eq!(picks(&mut pool, &Request::default(), t0, 3), [b, b, b]);
    pool.release(a);
    assert!(pool.is_drained(a) && pool.backend(a).is_none(), "gone once idle");
    assert!(pool.reconfigure(b, 0, Vec::new()) && pool.pick(&Request::default(), t0).is_none(), "weight 0");
    assert!(!pool.reconfigure(a, 1, Vec::new()), "a is gone");
    pool.reconfigure(b, 1, Vec::new());
    assert!(pool.drain(b) && pool.pick(&Request::default(), t0).is_none());
    assert!(pool.undrain(b, t0) && pool.pick(&Request::default(), t0) == Some(b));
}

#[test]
fn the_service_policy_routes_by_protocol_or_port() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig { policy: Policy::Service, check: None, ..PoolConfig::default() }).unwrap();
    let mut web = backend(8080);
    web.services = vec!["http".into()];
    let web = pool.add(web, t0);
    let db = pool.add(backend(5432), t0);
    let http = Request { service: Some("http"), ..Request::default() };
    let pg = Request { service: Some("5432"), ..Request::default() };
    assert_eq!(picks(&mut pool, &http, t0, 3), [web, web, web]);
    assert_eq!(picks(&mut pool, &pg, t0, 3), [db, db, db]);
    assert_eq!(pool.pick(&Request { service: Some("smtp"), ..Request::default() }, t0), None);
}

#[test]
fn the_load_policy_shares_by_reported_idle_capacity() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig { policy: Policy::Load, check: None, ..PoolConfig::default() }).unwrap();
    let busy = pool.add(backend(1), t0);
    let idle = pool.add(backend(2), t0);
    pool.set_load(busy, 0.75).unwrap();
    let got = picks(&mut pool, &Request::default(), t0, 100);
    assert_eq!(got.iter().filter(|&&id| id == busy).count(), 20, "0.25 against 1: a fifth");
    pool.set_load(busy, 1.0).unwrap();
    pool.set_load(idle, 1.0).unwrap();
    assert_eq!(picks(&mut pool, &Request::default(), t0, 2).len(), 2, "all full: shared by weight");
    assert_eq!(pool.set_load(busy, 1.5), Err(ConfigError::Load(1.5)));
    assert!(pool.set_load(busy, f64::NAN).is_err());
}

#[test]
fn maglev_keeps_a_key_on_its_backend_and_moves_it_only_when_that_one_leaves() {
    let t0 = Instant::now();
    let mut pool = Pool::new(PoolConfig { policy: Policy::Maglev, check: None, ..PoolConfig::default() }).unwrap();
    let ids: Vec<_> = (1..=5).map(|p| pool.add(backend(p), t0)).collect();
    let keys: Vec<[u8; 4]> = (0u32..200).map(u32::to_be_bytes).collect();
    let owner = |pool: &mut Pool, k: &[u8]| picks(pool, &Request { key: Some(k), ..Request::default() }, t0, 1)[0];
    let before: Vec<_> = keys.iter().map(|k| owner(&mut pool, k)).collect();
    pool.drain(ids[2]);
    for (k, was) in keys.iter().zip(&before) {
        let now = owner(&mut pool, k);
        assert!(now == *was || *was == ids[2], "a key not on the drained backend moved");
        assert_ne!(now, ids[2]);
    }
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let bad = |config: PoolConfig| Pool::new(config).unwrap_err().to_string();
    assert!(bad(PoolConfig { table_size: 65_536, ..PoolConfig::default() }).contains("not a prime"));
    let zero_rise =
        PoolConfig { check: Some(CheckConfig { rise: 0, ..CheckConfig::default() }), ..PoolConfig::default() };
    assert!(bad(zero_rise).contains("rise and fall"));
    assert!(bad(PoolConfig { slow_start: Some(Duration::ZERO), ..PoolConfig::default() }).contains("slow start"));
}
