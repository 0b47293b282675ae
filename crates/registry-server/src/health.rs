//! Health checks: a [`Backend`] wrapper whose `lookup` and `snapshot` (and so the binary
//! protocol's lookups and every DNS answer) leave out endpoints whose check fails, and put them
//! back when it passes again.
//!
//! [`Checked`] follows the inner backend with a watch: every endpoint whose metadata asks for a
//! check (see [`spec`]) gets a task that probes it (TCP connect, HTTP GET, or waits for TTL
//! reports) and feeds the results through a [`spec::Tracker`]; the endpoint's task ends when the
//! endpoint goes. Health is each instance's own view, as a Consul agent's is: it is not stored,
//! and watches report registrations, not health (watchers that need health ask `lookup`).
//!
//! Writes that ask for a check are refused unless it can be run (see [`spec`]): a reachable
//! address of the endpoint's own, an interval of at least a second, and at most
//! [`spec::MAX_CHECKS_PER_NAME`] checked endpoints per name. A TTL check's pass needs the name's
//! token, as any other change to it does.

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use warren_registry::backend::{Backend, Lease, Watch};
use warren_registry::model::{Endpoint, EndpointKey, Entry, Error, EventKind, LeaseId, Name, Revision};

use spec::{CheckSpec, MAX_CHECKS_PER_NAME, Probe, Tracker};

type Key = (Name, EndpointKey);

/// One checked endpoint: its probe task, what it concluded, and a doorbell for TTL reports.
#[derive(Debug)]
struct EndpointCheck {
    spec: CheckSpec,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    passed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for EndpointCheck {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Health per endpoint, shared by the follower and every reader.
#[derive(Debug, Default)]
struct Table {
    checks: RwLock<HashMap<Key, EndpointCheck>>,
    /// Moves whenever a check starts, stops or changes its verdict: what `snapshot` leaves out
    /// may have changed.
    generation: Arc<AtomicU64>,
}

impl Table {
    fn healthy(&self, name: &Name, e: &Endpoint) -> bool {
        let checks = self.checks.read().expect("no panics while held");
        Table::passes(&checks, name, e)
    }

    /// Every lookup and DNS answer comes through here: one lock for the whole answer, and no
    /// key built at all while nothing is checked.
    fn keep_healthy(&self, name: &Name, mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
        let checks = self.checks.read().expect("no panics while held");
        if !checks.is_empty() {
            endpoints.retain(|e| Table::passes(&checks, name, e));
        }
        endpoints
    }

    fn passes(checks: &HashMap<Key, EndpointCheck>, name: &Name, e: &Endpoint) -> bool {
        checks.get(&(name.clone(), e.key())).is_none_or(|c| c.healthy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Checked endpoints of `name`, other than the one with `except`'s key.
    fn checks_of(&self, name: &Name, except: Option<EndpointKey>) -> usize {
        let checks = self.checks.read().expect("no panics while held");
        checks.keys().filter(|(n, k)| n == name && Some(*k) != except).count()
    }

    /// Starts, restarts or stops the check of one endpoint after it was put or deleted.
    fn update(&self, kind: EventKind, name: &Name, e: &Endpoint) {
        let key = (name.clone(), e.key());
        let spec = match kind {
            EventKind::Put => CheckSpec::for_endpoint(e).ok().flatten(),
            EventKind::Delete => None,
        };
        let mut checks = self.checks.write().expect("no panics while held");
        self.generation.fetch_add(1, Ordering::Release);
        match spec {
            None => {
                checks.remove(&key);
            }
            Some(spec) if checks.get(&key).is_some_and(|c| c.spec == spec) => {}
            // Writes are refused past the bound; this holds it against racing writers (and a
            // store filled before the bound), leaving the extra endpoints unchecked.
            Some(_)
                if !checks.contains_key(&key)
                    && checks.keys().filter(|(n, _)| n == name).count() >= MAX_CHECKS_PER_NAME =>
            {
                tracing::warn!(%name, addr = %e.socket_addr(), "health check not run: {MAX_CHECKS_PER_NAME} per name at most");
            }
            Some(spec) => {
                let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
                let passed = Arc::new(Notify::new());
                let verdict = Verdict { healthy: healthy.clone(), generation: self.generation.clone() };
                let task = tokio::spawn(run(spec.clone(), e.socket_addr(), verdict, passed.clone()));
                checks.insert(key, EndpointCheck { spec, healthy, passed, task });
            }
        }
    }
}

/// A backend whose reads leave out unhealthy endpoints. Writes pass through, refusing check
/// metadata that does not parse.
pub struct Checked {
    inner: Arc<dyn Backend>,
    table: Arc<Table>,
    follower: JoinHandle<()>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").field("checks", &self.table.checks.read().map(|c| c.len()).ok()).finish()
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Checked {
    /// Wraps `inner` and starts checking what it holds. Needs a tokio runtime.
    pub async fn new(inner: Arc<dyn Backend>) -> Result<Checked, Error> {
        let table = Arc::new(Table::default());
        let (revision, entries) = inner.list("").await?;
        for entry in &entries {
            for e in &entry.endpoints {
                table.update(EventKind::Put, &entry.name, e);
            }
        }
        let follower = tokio::spawn(follow(inner.clone(), table.clone(), revision));
        Ok(Checked { inner, table, follower })
    }

    /// A TTL check's heartbeat: the endpoint is healthy for another TTL. Needs the name's token
    /// (or the admin's), since it changes what lookups answer.
    pub async fn pass(&self, name: &Name, addr: SocketAddr, token: &str) -> Result<(), Error> {
        self.inner.authorize(name, token).await?;
        let checks = self.table.checks.read().expect("no panics while held");
        let check = checks
            .iter()
            .find(|((n, (ip, port, _)), _)| n == name && SocketAddr::new(*ip, *port) == addr)
            .map(|(_, c)| c)
            .ok_or_else(|| Error::Invalid(format!("{name} {addr}: no such endpoint with a health check")))?;
        if !matches!(check.spec.probe, Probe::Ttl(_)) {
            return Err(Error::Invalid(format!("{name} {addr}: its check is not a ttl check")));
        }
        check.passed.notify_one();
        Ok(())
    }

    /// Every endpoint of a name with its health (for operators: `GET /v1/health/<name>`).
    pub async fn health(&self, name: &Name) -> Result<Vec<(Endpoint, bool)>, Error> {
        let (_, Entry { name, endpoints }) = self.inner.lookup(name).await?;
        Ok(endpoints
            .into_iter()
            .map(|e| {
                let healthy = self.table.healthy(&name, &e);
                (e, healthy)
            })
            .collect())
    }

    fn healthy_only(&self, name: &Name, endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
        self.table.keep_healthy(name, endpoints)
    }
}

/// Refuses checks that cannot run, and more than `room` checked endpoints.
fn check_meta(endpoints: &[Endpoint], room: usize) -> Result<(), Error> {
    let mut checked = 0;
    for e in endpoints {
        checked += usize::from(CheckSpec::for_endpoint(e)?.is_some());
    }
    if checked > room {
        return Err(Error::TooLarge(format!("at most {MAX_CHECKS_PER_NAME} endpoints with a health check per name")));
    }
    Ok(())
}

#[async_trait]
impl Backend for Checked {
    async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        check_meta(&endpoints, MAX_CHECKS_PER_NAME)?;
        self.inner.bind(name, token, endpoints).await
    }
    async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        check_meta(&endpoints, MAX_CHECKS_PER_NAME)?;
        self.inner.rebind(name, token, endpoints).await
    }
    async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error> {
        self.inner.unbind(name, token).await
    }
    async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        let (revision, Entry { name, endpoints }) = self.inner.lookup(name).await?;
        let endpoints = self.healthy_only(&name, endpoints);
        Ok((revision, Entry { name, endpoints }))
    }
    async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        self.inner.list(prefix).await
    }
    async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error> {
        let room = MAX_CHECKS_PER_NAME.saturating_sub(self.table.checks_of(name, Some(endpoint.key())));
        check_meta(std::slice::from_ref(&endpoint), room)?;
        self.inner.register(name, token, endpoint, ttl).await
    }
    async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error> {
        self.inner.renew(lease, token).await
    }
    async fn authorize(&self, name: &Name, token: &str) -> Result<(), Error> {
        self.inner.authorize(name, token).await
    }
    async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error> {
        self.inner.release(lease, token).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn Watch>, Error> {
        self.inner.watch(prefix, from).await
    }
    fn snapshot(&self, name: &Name) -> Option<Vec<Endpoint>> {
        self.inner.snapshot(name).map(|endpoints| self.healthy_only(name, endpoints))
    }

    fn snapshot_generation(&self) -> Option<u64> {
        // Both only grow, so their sum moves whenever either does.
        let own = self.table.generation.load(Ordering::Acquire);
        self.inner.snapshot_generation().map(|inner| inner.wrapping_add(own))
    }
}

/// Keeps the table in step with the backend; after a lost watch, lists again and reconciles.
async fn follow(inner: Arc<dyn Backend>, table: Arc<Table>, mut revision: Revision) {
    loop {
        if let Ok(mut watch) = inner.watch("", revision).await {
            while let Ok(events) = watch.next().await {
                for event in &events {
                    table.update(event.kind, &event.name, &event.endpoint);
                    revision = revision.max(event.revision);
                }
            }
        }
        let Ok((now, entries)) = inner.list("").await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let live: BTreeMap<Key, &Endpoint> =
            entries.iter().flat_map(|en| en.endpoints.iter().map(|e| ((en.name.clone(), e.key()), e))).collect();
        let gone: Vec<Key> = {
            let checks = table.checks.read().expect("no panics while held");
            checks.keys().filter(|k| !live.contains_key(*k)).cloned().collect()
        };
        table.checks.write().expect("no panics while held").retain(|k, _| !gone.contains(k));
        for ((name, _), e) in live {
            table.update(EventKind::Put, &name, e);
        }
        revision = now;
    }
}

/// Probes one endpoint for as long as it is registered.
/// Where a check's verdict goes: the flag readers test, and the table's generation, moved when
/// the flag changes.
struct Verdict {
    healthy: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Verdict {
    fn set(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

async fn run(spec: CheckSpec, addr: SocketAddr, verdict: Verdict, passed: Arc<Notify>) {
    let mut tracker = Tracker::new(&spec);
    let set = |t: &Tracker| verdict.set(t.healthy());
    if let Probe::Ttl(ttl) = spec.probe {
        // A report within the TTL keeps it healthy; silence for a whole TTL takes it out.
        loop {
            let reported = tokio::time::timeout(ttl, passed.notified()).await.is_ok();
            tracker.record(reported);
            set(&tracker);
        }
    }
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let passed = tokio::time::timeout(spec.timeout, probe(&spec.probe, addr)).await.unwrap_or(false);
        if tracker.record(passed) {
            tracing::info!(%addr, healthy = tracker.healthy(), "health check changed");
        }
        set(&tracker);
    }
}

async fn probe(probe: &Probe, addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return false };
    let Probe::Http { path } = probe else { return true };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: warren-health\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all that matters; read until a whole head has arrived (bounded).
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while head.len() < 8192 {
        let Ok(n) = stream.read(&mut buf).await else { return false };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match (response.parse(&head), response.code) {
            (Ok(_), Some(code)) => return (200..400).contains(&code),
            (Ok(_), None) => continue,
            (Err(_), _) => return false,
        }
    }
    false
}
