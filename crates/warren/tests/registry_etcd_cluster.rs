//! Two `warren registry` instances on a three-member etcd cluster, under load (writers binding
//! names, holders renewing leases, watchers, DNS resolvers), while etcd's leader is killed and
//! restarted, then a follower: no acknowledged write is lost, each watch delivers every write
//! once and in revision order without ending, no live lease lapses, and every DNS answer carries
//! every held address. The cluster runs in a network namespace of the test's own, with raft
//! timing set small (heartbeat 50 ms, election timeout 500 ms; etcd's defaults are 100 ms and
//! 1 s) so that each election is short; the time writes stalled is printed beside it.

mod etcd_cluster_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_cluster_support::leader;
use etcd_cluster_support::load::{self, HELD, Seen, TOKEN, WRITTEN};
use support::{Server, T};
use warren_registry::client::Client;
use warren_registry::{Endpoint, Name, Revision};
use warren_testkit::{EtcdCluster, RaftTiming};

const TIMING: RaftTiming = RaftTiming { heartbeat: Duration::from_millis(50), election: Duration::from_millis(500) };
/// Long beside an election, so a lease lapses only if renewals stop for good.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Leased endpoints of [`HELD`], registered through the two instances in turn.
const HOLDERS: u8 = 6;
const WRITERS_PER_INSTANCE: usize = 2;
/// Writes acknowledged after each step before the next: the load has plainly resumed.
const RESUMED: usize = 100;
/// The bound on every wait of the test (an election, a restart, writes resuming).
const WITHIN: Duration = Duration::from_secs(30);
const PREFIX: &str = "/failover/";

fn instance(store: &str, data: &std::path::Path) -> Server {
    let data = data.to_str().unwrap();
    // Response-rate limiting off: the resolvers ask from one address more often than its 20/s.
    let dns = ["--dns", "127.0.0.1:0", "--dns-rate", "0"];
    let args = ["registry", "--listen", "127.0.0.1:0", "--data", data, "--store", store];
    Server::spawn(&[&args[..], &dns[..]].concat())
}

/// The address of the instance's DNS listener, from its `warren: serving dns … on ADDR` line.
fn dns_of(server: &mut Server) -> SocketAddr {
    let out = server.wait_stdout(|o| o.lines().any(|l| l.starts_with("warren: serving dns ")), T).expect("dns line");
    let line = out.lines().find(|l| l.starts_with("warren: serving dns ")).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits (bounded) until `count` writes were acknowledged after `since`.
async fn acked_after(seen: &Seen, since: Instant, count: usize) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let after = seen.acked.lock().unwrap().iter().filter(|a| a.at > since).count();
        if after >= count {
            return;
        }
        assert!(Instant::now() < deadline, "only {after} writes acknowledged within {WITHIN:?} after a step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest time between `from` (a kill) and `to` in which no write was acknowledged.
fn stall(seen: &Seen, from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = seen.acked.lock().unwrap().iter().map(|a| a.at).collect();
    times.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|&&t| t > from && t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest
}

/// Every name under [`WRITTEN`] as etcd holds it: (create revision, name, port), by revision.
async fn in_etcd(urls: &[String]) -> Vec<(Revision, String, u16)> {
    let mut client = etcd_client::Client::connect(urls, None).await.unwrap();
    let key = format!("{PREFIX}ep/{WRITTEN}");
    let got = client.get(key, Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let mut names: Vec<(Revision, String, u16)> = got
        .kvs()
        .iter()
        .map(|kv| {
            // ep/<name>/tcp/<addr>/<port>
            let parts: Vec<&str> = kv.key_str().unwrap().trim_start_matches(PREFIX).split('/').collect();
            (Revision(kv.create_revision() as u64), parts[1].to_owned(), parts[4].parse().unwrap())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_registry_rides_out_losing_the_etcd_leader_and_a_follower() {
    if let Err(e) = warren_testkit::netns::isolate_thread() {
        eprintln!(
            "skipped: the etcd cluster needs a network namespace of the test's own, which cannot be made here ({e})"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut cluster = EtcdCluster::start("failover", TIMING).expect("etcd (Debian's etcd-server) must be installed");
    let urls = cluster.client_urls();
    let mut running = [true; 3];
    rt.block_on(leader(&urls, &running, WITHIN));

    let store = cluster.store_url(PREFIX);
    let data = std::env::temp_dir().join(format!("warren-registry-etcd-cluster-{}", std::process::id()));
    let mut servers = [instance(&store, &data.join("a")), instance(&store, &data.join("b"))];
    let dns = [dns_of(&mut servers[0]), dns_of(&mut servers[1])];
    let seen = Arc::new(Seen::default());

    let (clients, leases, from) = rt.block_on(async {
        let clients =
            [Client::connect(servers[0].addr, T).await.unwrap(), Client::connect(servers[1].addr, T).await.unwrap()];
        let mut leases = Vec::new();
        for k in 0..HOLDERS {
            let endpoint = Endpoint::tcp(([10, 0, 0, k + 1], 80).into());
            let client = &clients[usize::from(k) % 2];
            leases.push(client.register(&Name::new(HELD).unwrap(), TOKEN, endpoint, LEASE_TTL).await.unwrap().id);
        }
        let (from, _) = clients[0].list(WRITTEN).await.unwrap();
        (clients, leases, from)
    });
    let held: BTreeSet<Ipv4Addr> = (0..HOLDERS).map(|k| Ipv4Addr::new(10, 0, 0, k + 1)).collect();
    for server in dns {
        rt.block_on(load::resolved(server, &held, WITHIN)).unwrap();
    }

    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        for w in 0..WRITERS_PER_INSTANCE {
            tasks.push(rt.spawn(load::write(client.clone(), i * WRITERS_PER_INSTANCE + w, seen.clone())));
        }
        tasks.push(rt.spawn(load::resolve(dns[i], held.clone(), seen.clone())));
    }
    for (k, lease) in leases.iter().enumerate() {
        tasks.push(rt.spawn(load::hold(clients[k % 2].clone(), *lease, seen.clone())));
    }
    let watchers: Vec<_> = (0..2).map(|i| rt.spawn(load::follow(clients[i].clone(), i, from, seen.clone()))).collect();

    let started = Instant::now();
    rt.block_on(acked_after(&seen, started, RESUMED));

    // The leader: writes stall until the others elect a new one.
    let killed = rt.block_on(leader(&urls, &running, WITHIN));
    let leader_killed_at = Instant::now();
    cluster.kill(killed);
    running[killed] = false;
    let new_leader = rt.block_on(leader(&urls, &running, WITHIN));
    rt.block_on(acked_after(&seen, leader_killed_at, RESUMED));
    let leader_stall = stall(&seen, leader_killed_at, Instant::now());
    cluster.restart(killed).unwrap();
    running[killed] = true;
    rt.block_on(leader(&urls, &running, WITHIN));
    rt.block_on(acked_after(&seen, Instant::now(), RESUMED));

    // A follower: no election; only what was in flight on it is retried elsewhere.
    let follower = (0..3).find(|&i| i != new_leader).unwrap();
    let follower_killed_at = Instant::now();
    cluster.kill(follower);
    running[follower] = false;
    rt.block_on(acked_after(&seen, follower_killed_at, RESUMED));
    let follower_stall = stall(&seen, follower_killed_at, Instant::now());
    cluster.restart(follower).unwrap();
    running[follower] = true;
    rt.block_on(leader(&urls, &running, WITHIN));
    rt.block_on(acked_after(&seen, Instant::now(), RESUMED));

    seen.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });

    // No acknowledged write is lost: each is in etcd at the revision it was acknowledged with.
    let written = rt.block_on(in_etcd(&urls));
    let by_name: BTreeMap<&str, (Revision, u16)> = written.iter().map(|(r, n, p)| (n.as_str(), (*r, *p))).collect();
    let acked = seen.acked.lock().unwrap().clone();
    let lost: Vec<_> =
        acked.iter().filter(|a| by_name.get(a.name.as_str()) != Some(&(a.revision, a.port))).map(|a| &a.name).collect();
    assert!(lost.is_empty(), "{} acknowledged writes are not in etcd as acknowledged: {lost:?}", lost.len());

    // Each watch delivered exactly etcd's history of those names: no gap, no duplicate, in order.
    let history: Vec<(Revision, String)> = written.iter().map(|(r, n, _)| (*r, n.clone())).collect();
    let deadline = Instant::now() + WITHIN;
    for (i, log) in seen.watched.iter().enumerate() {
        rt.block_on(async {
            while log.lock().unwrap().len() < history.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let log = log.lock().unwrap();
        let first_wrong = log.iter().zip(&history).position(|(got, want)| got != want);
        assert!(
            *log == history,
            "watcher {i}: {} events, etcd holds {}; first difference at {first_wrong:?}",
            log.len(),
            history.len()
        );
    }
    assert_eq!(*seen.ended_watches.lock().unwrap(), Vec::<String>::new(), "no watch may end");
    for watcher in watchers {
        watcher.abort();
    }

    // Leases held by live clients survive, and every DNS answer carried every held address.
    assert_eq!(*seen.lost_leases.lock().unwrap(), Vec::<String>::new());
    rt.block_on(async {
        for (k, lease) in leases.iter().enumerate() {
            clients[k % 2].renew(*lease, TOKEN).await.unwrap();
        }
        for client in &clients {
            let (_, entry) = client.lookup(&Name::new(HELD).unwrap()).await.unwrap();
            assert_eq!(entry.endpoints.len(), usize::from(HOLDERS), "{entry:?}");
        }
    });
    let bad_dns = seen.bad_dns.lock().unwrap().clone();
    assert!(
        bad_dns.is_empty(),
        "{} DNS answers incomplete or missing: {:?}",
        bad_dns.len(),
        &bad_dns[..bad_dns.len().min(5)]
    );
    let answers = seen.dns_answers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(answers > 0);

    println!(
        "etcd election timeout {} ms (heartbeat {} ms); writes stalled {} ms after the leader was killed, {} ms \
         after a follower was killed; {} writes acknowledged ({} failed or unanswered), {} renewals ({} failed), \
         {} watch events per watcher, {answers} complete DNS answers, in {:.1} s",
        TIMING.election.as_millis(),
        TIMING.heartbeat.as_millis(),
        leader_stall.as_millis(),
        follower_stall.as_millis(),
        acked.len(),
        seen.failed_writes.lock().unwrap().len(),
        seen.renewals.load(std::sync::atomic::Ordering::Relaxed),
        seen.failed_renewals.lock().unwrap().len(),
        history.len(),
        started.elapsed().as_secs_f64(),
    );
    for (at, why) in seen.failed_writes.lock().unwrap().iter().take(8) {
        println!("  write failed {:?} after the leader's kill: {why}", at.saturating_duration_since(leader_killed_at));
    }
    drop(clients);
    for server in servers {
        server.stop_clean();
    }
    let _ = std::fs::remove_dir_all(&data);
}
