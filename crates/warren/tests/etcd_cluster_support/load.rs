//! The clients that keep two registry instances busy while etcd members die: writers binding
//! fresh names, holders renewing leases, watchers following every write, resolvers asking DNS.
//! Each records what it was told, so the test can hold the registry to it afterwards.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warren_registry::client::Client;
use warren_registry::{Endpoint, Error, LeaseId, Name, Revision};

use super::dns;

/// Every client writes with this token, so any of them may renew any lease.
pub const TOKEN: &str = "tok";
/// The name whose endpoints are held by leases, and asked for through DNS.
pub const HELD: &str = "svc";
/// Watchers and writers meet on names with this prefix.
pub const WRITTEN: &str = "w";
/// A call that has not answered in this long counts as failed (its outcome unknown).
const CALL_WITHIN: Duration = Duration::from_secs(5);
/// The most names one writer binds: a bound on the load, never reached in a run.
const MAX_WRITES: u16 = 30_000;
/// Pause after a failed write or renewal before the next try, so a refusing registry is not
/// asked thousands of times a second.
const BACK_OFF: Duration = Duration::from_millis(20);
/// How often holders renew, and resolvers ask.
const RENEW_EVERY: Duration = Duration::from_millis(200);
const RESOLVE_EVERY: Duration = Duration::from_millis(20);

/// A write the registry acknowledged: the name, its port and the revision it was given.
#[derive(Clone, Debug)]
pub struct Acked {
    pub name: String,
    pub port: u16,
    pub revision: Revision,
    pub at: Instant,
}

/// What every client saw, shared.
#[derive(Debug, Default)]
pub struct Seen {
    pub stop: AtomicBool,
    pub acked: Mutex<Vec<Acked>>,
    /// Writes answered with an error or not at all: (when, why).
    pub failed_writes: Mutex<Vec<(Instant, String)>>,
    pub renewals: AtomicU64,
    pub failed_renewals: Mutex<Vec<(Instant, String)>>,
    /// Leases the registry said were gone: must stay empty.
    pub lost_leases: Mutex<Vec<String>>,
    /// Per watcher, every (revision, name) its watch delivered, in order.
    pub watched: [Mutex<Vec<(Revision, String)>>; 2],
    /// Watches that ended, and why: must stay empty.
    pub ended_watches: Mutex<Vec<String>>,
    pub dns_answers: AtomicU64,
    /// DNS answers that lacked an address, or questions not answered: must stay empty.
    pub bad_dns: Mutex<Vec<String>>,
}

impl Seen {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Binds `w<writer>-1`, `w<writer>-2`, … one after another until told to stop.
pub async fn write(client: Client, writer: usize, seen: Arc<Seen>) {
    for i in 1..=MAX_WRITES {
        if seen.stopped() {
            return;
        }
        let name = format!("{WRITTEN}{writer}-{i}");
        let endpoint = Endpoint::tcp(([127, 0, 0, 1], i).into());
        let bound = Name::new(name.clone()).unwrap();
        let bind = client.bind(&bound, TOKEN, vec![endpoint]);
        match tokio::time::timeout(CALL_WITHIN, bind).await {
            Ok(Ok(revision)) => {
                seen.acked.lock().unwrap().push(Acked { name, port: i, revision, at: Instant::now() });
            }
            outcome => {
                let why = outcome.map_or_else(|_| "no answer".to_owned(), |r| r.unwrap_err().to_string());
                seen.failed_writes.lock().unwrap().push((Instant::now(), format!("{name}: {why}")));
                tokio::time::sleep(BACK_OFF).await;
            }
        }
    }
}

/// Renews `lease` until told to stop; a lease the registry no longer knows is recorded as lost.
pub async fn hold(client: Client, lease: LeaseId, seen: Arc<Seen>) {
    while !seen.stopped() {
        tokio::time::sleep(RENEW_EVERY).await;
        match tokio::time::timeout(CALL_WITHIN, client.renew(lease, TOKEN)).await {
            Ok(Ok(_)) => _ = seen.renewals.fetch_add(1, Ordering::Relaxed),
            Ok(Err(Error::LeaseNotFound(_))) => {
                seen.lost_leases.lock().unwrap().push(format!("lease {lease}"));
                return;
            }
            outcome => {
                let why = outcome.map_or_else(|_| "no answer".to_owned(), |r| r.unwrap_err().to_string());
                seen.failed_renewals.lock().unwrap().push((Instant::now(), why));
            }
        }
    }
}

/// Follows every name under [`WRITTEN`] after `from`, recording each event; runs until aborted.
pub async fn follow(client: Client, watcher: usize, from: Revision, seen: Arc<Seen>) {
    let mut watch = match client.watch(WRITTEN, from).await {
        Ok(watch) => watch,
        Err(e) => return seen.ended_watches.lock().unwrap().push(format!("watcher {watcher}: {e}")),
    };
    loop {
        match watch.next().await {
            Ok(events) => {
                let mut log = seen.watched[watcher].lock().unwrap();
                log.extend(events.into_iter().map(|e| (e.revision, e.name.to_string())));
            }
            Err(e) => return seen.ended_watches.lock().unwrap().push(format!("watcher {watcher}: {e}")),
        }
    }
}

/// Asks `dns` for [`HELD`]'s addresses until told to stop; each answer must carry `all`.
/// Wait, up to `within`, until `dns` answers with every address in `all`: each instance's cache
/// learns what was registered through the other one from its etcd watch, a moment later.
pub async fn resolved(dns: SocketAddr, all: &BTreeSet<Ipv4Addr>, within: std::time::Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        let answer = dns::query_a(dns, &format!("{HELD}.warren."), id).await;
        match answer {
            Ok(found) if found.iter().copied().collect::<BTreeSet<_>>() == *all => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{dns} did not answer every held address within {within:?}: {answer:?}"));
            }
            _ => tokio::time::sleep(RESOLVE_EVERY).await,
        }
    }
}

pub async fn resolve(dns: SocketAddr, all: BTreeSet<Ipv4Addr>, seen: Arc<Seen>) {
    let mut id = 0u16;
    while !seen.stopped() {
        id = id.wrapping_add(1);
        match dns::query_a(dns, &format!("{HELD}.warren."), id).await {
            Ok(found) if found.iter().copied().collect::<BTreeSet<_>>() == all => {
                seen.dns_answers.fetch_add(1, Ordering::Relaxed);
            }
            Ok(found) => seen.bad_dns.lock().unwrap().push(format!("{dns}: {found:?}")),
            Err(e) => seen.bad_dns.lock().unwrap().push(format!("{dns}: {e}")),
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}
