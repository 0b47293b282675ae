//! Watches by the thousand over loopback: every watcher gets every event once, in order; and a
//! watcher that stops reading costs a bounded queue and is cut off with a clear error.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, ep, name, open};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use warren_models::Model;
use warren_registry::client::Client;
use warren_registry::wire::{self, Decoded, Request, Response};
use warren_registry::{Endpoint, Error, EventKind, Revision};
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

/// `n` endpoints on ports from `first`, each with 4 KiB of metadata: a rebind from one such set to
/// the next is 2n events of about 4 KiB each.
fn heavy(first: u16, n: u16) -> Vec<Endpoint> {
    let meta: BTreeMap<String, String> = (0..16).map(|i| (format!("k{i}"), "v".repeat(256))).collect();
    (first..first + n).map(|port| Endpoint { meta: meta.clone(), ..ep(port) }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_costs_a_bounded_queue_and_ends_with_a_clear_error() {
    // Enough writes to overrun the store's buffer of live batches (1,024) after the stalled
    // watcher's queue filled (4 MiB, some 60 writes, plus what the sockets hold), of about 64 KiB
    // of events each: some 100 MiB in all.
    const WRITES: usize = 1600;
    let server = start(Limits::default()).await;
    let writer = Client::connect(server.addr, T).await.unwrap();
    let svc = name("svc");
    let start = writer.bind(&svc, "t", heavy(1, 8)).await.unwrap();
    // The stalled watcher: a small receive buffer, one watch, and nothing read until the end.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let mut frame = Vec::new();
    wire::encode(1, &Request::Watch { prefix: "svc".into(), from: start }, wire::MAX_REQUEST, &mut frame).unwrap();
    stalled.write_all(&frame).await.unwrap();
    // A watcher that keeps up, on a connection of its own.
    let follower = Client::connect(server.addr, T).await.unwrap();
    let following = tokio::spawn(events(follower.watch("svc", start).await.unwrap(), WRITES));
    for i in 0..WRITES {
        let ports = heavy(if i % 2 == 0 { 100 } else { 1 }, 8);
        tokio::time::timeout(T, writer.rebind(&svc, "t", ports)).await.expect("answered in time").unwrap();
    }
    assert_eq!(revisions(&following.await.unwrap()).len(), WRITES, "the watcher that reads has every write");

    // Now read what the stalled watcher was sent: some events in order, then the error that ends
    // its watch, far fewer bytes than the events it missed.
    let (mut buf, mut read, mut last) = (Vec::new(), 0usize, start);
    let end = tokio::time::timeout(T, async {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            while let Decoded::Frame { len, id, body } = wire::decode::<Response>(&buf, wire::MAX_RESPONSE).unwrap() {
                assert_eq!(id, 1);
                buf.drain(..len);
                match body.unwrap() {
                    Response::Events { events } => {
                        assert!(events.iter().all(|e| e.revision >= last), "in order");
                        last = events.last().map_or(last, |e| e.revision);
                    }
                    Response::Error(e) => return e,
                    other => panic!("unexpected {other:?}"),
                }
            }
            let n = stalled.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection stays open until the error");
            read += n;
            buf.extend_from_slice(&chunk[..n]);
        }
    });
    let error = end.await.expect("the stalled watch ends in time");
    assert!(matches!(error, Error::Compacted { .. }), "{error}");
    assert!(read < 16 << 20, "{read} bytes queued for a peer that read nothing");
    server.stop().await;
}
