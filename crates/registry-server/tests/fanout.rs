//! Watches by the thousand over loopback: every watcher gets every event once, in order.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, ep, name, open};
use tokio::sync::oneshot;
use warren_models::Model;
use warren_registry::client::Client;
use warren_registry::{EventKind, Revision};
use warren_registry_server::server::{Limits, Report, serve};

const T: Duration = Duration::from_secs(20);

/// A server on 127.0.0.1:0 over a fresh store.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<Report>>,
    _dir: TempDir,
}

async fn start(limits: Limits) -> Running {
    let dir = TempDir::new();
    let backend = Arc::new(open(&dir));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(backend, listener, limits, Model::Hybrid, async { _ = stopped.await }));
    Running { addr, stop, done, _dir: dir }
}

impl Running {
    /// Stops the server and waits for it: a test that returned with its server still serving
    /// would leave the runtime's shutdown waiting for the server's thread.
    async fn stop(self) -> Report {
        self.stop.send(()).unwrap();
        tokio::time::timeout(T, self.done).await.expect("stopped in time").unwrap().unwrap()
    }
}

/// What a watcher saw: each event as (revision, kind, port).
type Seen = Vec<(Revision, EventKind, u16)>;

/// The events of `watch` until it has seen `n` revisions, within `T`. A write changes several
/// endpoints, an event each, all under the write's revision.
async fn events(mut watch: warren_registry::client::ClientWatch, n: usize) -> Seen {
    let mut seen = Seen::new();
    let deadline = tokio::time::Instant::now() + T;
    while revisions(&seen).len() < n {
        let events = tokio::time::timeout_at(deadline, watch.next()).await.expect("events in time").unwrap();
        seen.extend(events.iter().map(|e| (e.revision, e.kind, e.endpoint.port)));
    }
    seen
}

/// The revisions of `seen`, in order, each once; panics if they go back or an event repeats.
fn revisions(seen: &Seen) -> Vec<Revision> {
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "revisions never go back");
    let mut distinct = seen.clone();
    distinct.sort_unstable_by_key(|e| (e.0, e.1 as u8, e.2));
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "no event comes twice");
    let mut revisions: Vec<Revision> = seen.iter().map(|e| e.0).collect();
    revisions.dedup();
    revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_get_every_event_once_in_order() {
    const CONNECTIONS: usize = 20;
    const PER_CONNECTION: usize = 50;
    const WRITES: usize = 100;
    let server = start(Limits::default()).await;
    let addr = server.addr;
    let writer = Client::connect(addr, T).await.unwrap();
    let start = writer.bind(&name("svc"), "t", vec![ep(1)]).await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = Client::connect(addr, T).await.unwrap();
        for _ in 0..PER_CONNECTION {
            let watch = client.watch("svc", start).await.unwrap();
            watchers.push(tokio::spawn(events(watch, WRITES)));
        }
    }
    let (mut written, svc) = (Vec::new(), name("svc"));
    for port in 0..WRITES as u16 {
        let write = tokio::time::timeout(T, writer.rebind(&svc, "t", vec![ep(port + 2)]));
        written.push(write.await.expect("answered in time").unwrap());
    }
    let mut first = None;
    for watcher in watchers {
        // Each watcher gives up after `T` on its own, so this wait is bounded too.
        let seen = watcher.await.unwrap();
        assert_eq!(revisions(&seen), written, "each write's revision, in order");
        // The same events, in the same order, for every watcher.
        assert_eq!(&seen, first.get_or_insert_with(|| seen.clone()));
    }
    let report = server.stop().await;
    assert_eq!(report.accepted, 1 + CONNECTIONS as u64);
}
