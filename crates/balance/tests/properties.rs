//! The tables' promises, as properties over random backend sets.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use warren_balance::maglev::{DEFAULT_TABLE_SIZE, Maglev};
use warren_balance::{Backend, BackendId, Policy, Pool, PoolConfig, Request};

fn names(n: usize, salt: u16) -> Vec<String> {
    (0..n).map(|i| format!("10.{}.{}.{}:{}", i / 256, i % 256, salt % 251, 1024 + salt)).collect()
}

fn table(names: &[String]) -> Maglev {
    let members: Vec<(BackendId, &[u8])> =
        names.iter().enumerate().map(|(i, n)| (BackendId(i as u64), n.as_bytes())).collect();
    Maglev::build(&members, DEFAULT_TABLE_SIZE)
}

fn pool(policy: Policy, weights: &[u32]) -> (Pool, Vec<BackendId>, Instant) {
    let now = Instant::now();
    let mut pool = Pool::new(PoolConfig { policy, check: None, ..PoolConfig::default() }).unwrap();
    let ids = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let mut b = Backend::new(format!("127.0.0.1:{}", 2000 + i));
            b.weight = w;
            b.services = vec!["http".to_owned()];
            pool.add(b, now)
        })
        .collect();
    (pool, ids, now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Maglev's table gives each of N ≤ 655 backends a share within 1 % of any other's.
    #[test]
    fn maglev_shares_are_within_one_percent(n in 1usize..=655, salt: u16) {
        let shares = table(&names(n, salt)).shares();
        let (max, min) = (*shares.iter().max().unwrap(), *shares.iter().min().unwrap());
        prop_assert!(max * 100 <= min * 101, "n {n}: max {max}, min {min}");
    }

    /// When one of N backends leaves, at most 2/N of the keys change backend (its own 1/N
    /// included), and the shares stay within 1 %.
    #[test]
    fn maglev_moves_at_most_two_nths_when_one_leaves(n in 2usize..=655, salt: u16, leaving_seed: usize) {
        let names = names(n, salt);
        let leaving = leaving_seed % n;
        let before = table(&names);
        let mut after = before.clone();
        let rest: Vec<(BackendId, &[u8])> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leaving)
            .map(|(i, n)| (BackendId(i as u64), n.as_bytes()))
            .collect();
        after.update(&rest);
        let shares = after.shares();
        prop_assert!(shares.iter().max().unwrap() * 100 <= shares.iter().min().unwrap() * 101);
        let moved = before.owners().zip(after.owners()).filter(|(a, b)| a != b).count();
        prop_assert!(moved * n <= 2 * DEFAULT_TABLE_SIZE, "n {n}: {moved} of {DEFAULT_TABLE_SIZE} moved");
    }

    /// Over whole rounds, smooth weighted round-robin gives each backend exactly its weight.
    #[test]
    fn weighted_shares_match_weights(weights in prop::collection::vec(1u32..=20, 1..12), rounds in 1u32..5) {
        let (mut pool, ids, now) = pool(Policy::Weighted, &weights);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; ids.len()];
        for _ in 0..total * rounds {
            let id = pool.pick(&Request::default(), now).unwrap();
            pool.release(id);
            counts[ids.iter().position(|&i| i == id).unwrap()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| w * rounds).collect();
        prop_assert_eq!(counts, expected);
    }

    /// LARD keeps a URL on one backend while that backend's load stays within T_high.
    #[test]
    fn lard_keeps_a_url_until_its_load_bound(n in 2usize..8, url in "/[a-z]{1,12}") {
        let (mut pool, _, now) = pool(Policy::Lard, &vec![1; n]);
        let request = Request { target: Some(url.as_bytes()), ..Request::default() };
        let home = pool.pick(&request, now).unwrap();
        let t_high = pool.config().lard.t_high;
        // Connections pile up on the URL's backend, none released: it keeps the URL up to
        // T_high open connections (the picks that brought it there).
        for _ in 1..=t_high {
            prop_assert_eq!(pool.pick(&request, now), Some(home));
        }
        // Past T_high, with idle backends about, the URL moves.
        prop_assert_ne!(pool.pick(&request, now), Some(home));
    }

    /// A drained or ejected backend is never picked, under any policy.
    #[test]
    fn drained_and_ejected_backends_are_never_picked(
        n in 3usize..10,
        policy_index in 0usize..Policy::ALL.len(),
        keys in prop::collection::vec(any::<u64>(), 50),
    ) {
        let policy = Policy::ALL[policy_index];
        let (mut pool, ids, now) = pool(policy, &vec![1; n]);
        let (drained, ejected) = (ids[0], ids[1]);
        pool.drain(drained);
        for _ in 0..5 {
            pool.report(ejected, now, false);
        }
        for key in keys {
            let key = key.to_be_bytes();
            let request = Request { key: Some(&key), target: Some(&key), service: Some("http") };
            let id = pool.pick(&request, now);
            prop_assert!(id.is_some() && id != Some(drained) && id != Some(ejected), "{policy}: {id:?}");
            pool.release(id.unwrap());
        }
        // The ejection ends: the backend is back.
        let later = now + Duration::from_secs(31);
        prop_assert!(pool.state(ejected, later) == Some(warren_balance::State::Up));
    }
}

/// Power of two choices against least-connections, in a simulation of connections that arrive
/// and end at random: P2C's busiest backend carries at most 1.5 times the busiest backend
/// under least-connections, plus two (the "+O(1)" of Mitzenmacher's bound, which matters at
/// small loads).
#[test]
fn power_of_two_is_within_one_and_a_half_of_least_connections() {
    for (n, seed) in [(4, 1), (10, 2), (32, 3), (100, 4)] {
        let worst = |policy| {
            let (mut pool, _, now) = pool(policy, &vec![1; n]);
            let mut open: Vec<BackendId> = Vec::new();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut worst = 0;
            for _ in 0..20_000 {
                // Arrivals slightly outpace departures until about 8 connections per backend.
                if open.len() < 8 * n && rng.u8(..) < 140 || open.is_empty() {
                    open.push(pool.pick(&Request::default(), now).unwrap());
                } else {
                    let gone = open.swap_remove(rng.usize(..open.len()));
                    pool.release(gone);
                }
                worst = worst.max(pool.ids().map(|id| pool.open(id).unwrap()).max().unwrap());
            }
            worst
        };
        let (p2c, least) = (worst(Policy::PowerOfTwo), worst(Policy::LeastConnections));
        assert!(p2c * 2 <= least * 3 + 4, "n {n}: power-of-two peaked at {p2c}, least-connections at {least}");
        eprintln!("n {n}: power-of-two {p2c}, least-connections {least}");
    }
}
