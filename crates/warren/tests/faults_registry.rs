//! Fault: kill -9 of `warren registry` while 100 holders register and renew leases. Every lease
//! the registry acknowledged before the kill is there after a restart on the same data directory
//! and port, and every holder comes back: it reconnects, renews the same lease, and registers
//! again only if the lease is gone (as `warren register` does).
//!
//! Like every fault test, it runs in a network namespace it makes for itself (root only; otherwise
//! on the host's loopback, saying so): see `warren_testkit::netns`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Server, T};
use warren_registry::client::Client;
use warren_registry::{Endpoint, Entry, Error, LeaseId, Name};

const HOLDERS: u16 = 100;
/// Long enough that no lease lapses while the registry is down: a lease missing after the
/// restart was lost, not expired.
const TTL: Duration = Duration::from_secs(120);
/// Between two renewals of one holder (a fast pace, so that the kill lands among them).
const PACE: Duration = Duration::from_millis(20);
/// Registrations acknowledged before the kill (the others are in flight or not yet sent).
const REGISTERED_BEFORE_KILL: usize = 60;
/// Renewals acknowledged before the kill.
const RENEWED_BEFORE_KILL: usize = 200;

/// What a holder saw, and on a connection made when.
#[derive(Debug)]
enum Seen {
    Registered {
        holder: u16,
        lease: LeaseId,
    },
    Renewed {
        holder: u16,
        lease: LeaseId,
    },
    /// The registry did not know the lease: the holder registers again.
    Gone {
        holder: u16,
        lease: LeaseId,
    },
}

fn name(holder: u16) -> Name {
    Name::new(format!("h{holder}")).unwrap()
}

fn token(holder: u16) -> String {
    format!("token-{holder}")
}

fn endpoint(holder: u16) -> Endpoint {
    Endpoint::tcp(([127, 0, 0, 1], 20_000 + holder).into())
}

/// One holder: keeps its name registered until `stop`. A broken connection is made again and
/// the same lease renewed; only a lease the registry does not know is registered again.
async fn hold(holder: u16, addr: SocketAddr, seen: mpsc::Sender<(Instant, Seen)>, stop: Arc<AtomicBool>) {
    let mut conn: Option<(Client, Instant)> = None;
    let mut lease = None;
    while !stop.load(Ordering::Relaxed) {
        let Some((client, connected)) = &conn else {
            match Client::connect(addr, Duration::from_secs(1)).await {
                Ok(client) => conn = Some((client, Instant::now())),
                Err(_) => tokio::time::sleep(PACE).await,
            }
            continue;
        };
        let event = match lease {
            None => tokio::time::timeout(T, client.register(&name(holder), &token(holder), endpoint(holder), TTL))
                .await
                .map(|r| r.map(|l| Seen::Registered { holder, lease: l.id })),
            Some(id) => tokio::time::timeout(T, client.renew(id, &token(holder))).await.map(|r| match r {
                Err(Error::LeaseNotFound(_)) => Ok(Seen::Gone { holder, lease: id }),
                other => other.map(|_| Seen::Renewed { holder, lease: id }),
            }),
        };
        match event {
            Ok(Ok(event)) => {
                lease = match event {
                    Seen::Registered { lease, .. } | Seen::Renewed { lease, .. } => Some(lease),
                    Seen::Gone { .. } => None,
                };
                if seen.send((*connected, event)).is_err() {
                    return;
                }
                tokio::time::sleep(PACE).await;
            }
            // The registry is gone (or answered something else): connect again.
            Ok(Err(_)) | Err(_) => conn = None,
        }
    }
}

/// Count an answer of the registry that was killed.
fn note(event: &Seen, acked: &mut BTreeMap<u16, LeaseId>, renewals: &mut usize) {
    match *event {
        Seen::Registered { holder, lease } => {
            acked.insert(holder, lease);
        }
        Seen::Renewed { holder, lease } => {
            acked.insert(holder, lease);
            *renewals += 1;
        }
        Seen::Gone { holder, lease } => panic!("holder {holder}: lease {lease} gone before any kill"),
    }
}

#[test]
fn every_acknowledged_lease_survives_kill_9_and_every_holder_comes_back() {
    // A loopback of the test's own: the servers it starts and its clients run in it.
    warren_testkit::netns::isolate_test();
    let data = std::env::temp_dir().join(format!("warren-faults-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let start = |listen: &str| {
        Server::spawn(&["registry", "--listen", listen, "--data", data.to_str().unwrap(), "--admin-token", "a"])
    };
    let server = start("127.0.0.1:0");
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, seen) = mpsc::channel();
    for holder in 0..HOLDERS {
        rt.spawn(hold(holder, addr, tx.clone(), stop.clone()));
    }
    drop(tx);

    // The last lease each holder had acknowledged, and the counts, until the kill.
    let mut acked: BTreeMap<u16, LeaseId> = BTreeMap::new();
    let mut renewals = 0;
    while acked.len() < REGISTERED_BEFORE_KILL || renewals < RENEWED_BEFORE_KILL {
        let (_, event) = seen.recv_timeout(T).expect("the holders register and renew");
        note(&event, &mut acked, &mut renewals);
    }
    let killed = server.stop_with(Signal::SIGKILL);
    assert!(!killed.status.success());
    let killed_at = Instant::now();

    // Same data, same port: the holders find it where it was.
    let server = start(&addr.to_string());
    assert_eq!(server.addr, addr);
    // Straight after the restart, before any holder is back in: the leases are in the store.
    let listed = rt.block_on(async { Client::connect(addr, T).await.unwrap().list("h").await }).unwrap().1;
    let stored: BTreeMap<String, Vec<Endpoint>> =
        listed.into_iter().map(|e| (e.name.to_string(), e.endpoints)).collect();

    // Answers the old registry had sent are still arriving; events from connections made after
    // the kill are the new registry's.
    let mut lost = Vec::new();
    let mut back = BTreeMap::new();
    let deadline = Instant::now() + T;
    while back.len() < HOLDERS as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((connected, event)) = seen.recv_timeout(left) else {
            let missing: Vec<u16> = (0..HOLDERS).filter(|h| !back.contains_key(h)).collect();
            panic!("holders not back within {T:?}: {missing:?}");
        };
        if connected < killed_at {
            note(&event, &mut acked, &mut renewals);
            continue;
        }
        match event {
            Seen::Gone { holder, lease } => lost.push((holder, lease)),
            Seen::Registered { holder, lease } | Seen::Renewed { holder, lease } => {
                back.insert(holder, lease);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);

    let missing: Vec<_> = acked
        .keys()
        .filter(|h| !stored.get(&name(**h).to_string()).is_some_and(|eps| eps.contains(&endpoint(**h))))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations missing after the restart: {missing:?}",
        missing.len(),
        acked.len()
    );
    let lost: Vec<_> = lost.into_iter().filter(|(holder, lease)| acked.get(holder) == Some(lease)).collect();
    assert!(lost.is_empty(), "acknowledged leases the restarted registry did not know: {lost:?}");
    // Every acknowledged lease was renewed as it was, not replaced.
    let replaced: Vec<_> = acked.iter().filter(|(h, lease)| back.get(h) != Some(lease)).collect();
    assert!(replaced.is_empty(), "holders whose acknowledged lease was replaced: {replaced:?}");

    // Every holder, acknowledged before the kill or not, is visible in a lookup.
    rt.block_on(async {
        let client = Client::connect(addr, T).await.unwrap();
        for holder in 0..HOLDERS {
            let (_, Entry { endpoints, .. }) =
                client.lookup(&name(holder)).await.unwrap_or_else(|e| panic!("h{holder}: {e}"));
            assert!(endpoints.contains(&endpoint(holder)), "h{holder}: {endpoints:?}");
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&data);
}
