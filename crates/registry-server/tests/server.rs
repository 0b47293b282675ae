//! The server and the client over loopback: pipelining, watches, the cache, limits, shutdown.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, ep, name, open};
use tokio::sync::oneshot;
use warren_models::Model;
use warren_registry::client::{Cache, Client};
use warren_registry::wire::{self, Decoded, Response};
use warren_registry::{Error, EventKind, Revision};
use warren_registry_server::server::{Limits, Report, serve};

const T: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 over a fresh store; stopped (and its report returned) by `stop`.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Report>,
    _dir: TempDir,
}

impl Running {
    async fn start(limits: Limits) -> Running {
        Running::start_under(Model::Hybrid, limits).await
    }

    async fn start_under(model: Model, limits: Limits) -> Running {
        let dir = TempDir::new();
        let backend = Arc::new(open(&dir));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stop_on = async move { _ = stopped.await };
        let done = tokio::spawn(async move { serve(backend, listener, limits, model, stop_on).await.unwrap() });
        Running { addr, stop: Some(stop), done, _dir: dir }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr, T).await.unwrap()
    }

    async fn stop(mut self) -> Report {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(T, &mut self.done).await.expect("stopped in time").unwrap()
    }
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_all_get_their_answers() {
    let server = Running::start(Limits::default()).await;
    let client = server.client().await;
    let writes = (0..300u16).map(|i| {
        let client = client.clone();
        async move { client.bind(&name(&format!("s{i}")), "t", vec![ep(i + 1)]).await }
    });
    let revisions = futures_join(writes).await;
    assert!(revisions.iter().all(Result::is_ok));
    let lookups = (0..300u16).map(|i| {
        let client = client.clone();
        async move { client.lookup(&name(&format!("s{i}"))).await.map(|(_, entry)| entry.endpoints[0].port) }
    });
    let ports: Vec<u16> = futures_join(lookups).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(ports, (1..=300).collect::<Vec<_>>(), "every answer went to its own request");
    assert_eq!(client.lookup(&name("nope")).await, Err(Error::NotBound(name("nope"))));
    let report = server.stop().await;
    assert_eq!((report.accepted, report.refused), (1, 0));
}

#[tokio::test]
async fn every_in_process_model_serves_the_protocol() {
    let models = [Model::Iterative, Model::Thread, Model::Pool, Model::Event, Model::Green, Model::Hybrid];
    for model in models {
        let server = Running::start_under(model, Limits::default()).await;
        let client = server.client().await;
        let mut watch = client.watch("", Revision(0)).await.unwrap();
        let writes = (0..20u16).map(|i| {
            let client = client.clone();
            async move { client.bind(&name(&format!("m{i}")), "t", vec![ep(i + 1)]).await }
        });
        assert!(futures_join(writes).await.iter().all(Result::is_ok), "{model}");
        let mut seen = 0;
        while seen < 20 {
            let events = tokio::time::timeout(T, watch.next()).await.expect("events in time").unwrap();
            seen += events.len();
        }
        assert_eq!(client.lookup(&name("m7")).await.unwrap().1.endpoints[0].port, 8, "{model}");
        drop((watch, client));
        let report = server.stop().await;
        assert_eq!((report.accepted, report.refused), (1, 0), "{model}");
    }
}

/// Runs futures concurrently (as tasks) and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn watches_share_the_connection_with_requests_and_end_on_cancel() {
    let server = Running::start(Limits::default()).await;
    let client = server.client().await;
    let r1 = client.bind(&name("web"), "t", vec![ep(1)]).await.unwrap();
    let mut web = client.watch("web", Revision(0)).await.unwrap();
    let lease = client.register(&name("api"), "t", ep(2), Duration::from_secs(30)).await.unwrap();
    let r3 = client.unbind(&name("web"), "t").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(
            tokio::time::timeout(T, web.next()).await.unwrap().unwrap().into_iter().map(|e| (e.revision, e.kind)),
        );
    }
    assert_eq!(got, [(r1, EventKind::Put), (r3, EventKind::Delete)], "api's events are not under the prefix");
    assert_eq!(client.renew(lease.id, "t").await, Ok(Duration::from_secs(30)));
    drop(web);
    // The connection goes on serving after the watch is cancelled.
    assert!(client.release(lease.id, "t").await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn the_cache_answers_from_memory_until_a_watch_says_otherwise() {
    let server = Running::start(Limits::default()).await;
    let writer = server.client().await;
    writer.bind(&name("web"), "t", vec![ep(1)]).await.unwrap();
    let cache = Cache::new(server.client().await);
    assert_eq!(cache.lookup(&name("web")).await.unwrap()[0].port, 1);
    assert_eq!(cache.lookup(&name("web")).await.unwrap()[0].port, 1);
    assert_eq!(cache.stats(), (1, 1));
    let revision = writer.rebind(&name("web"), "t", vec![ep(2)]).await.unwrap();
    assert!(tokio::time::timeout(T, cache.caught_up(revision)).await.unwrap());
    assert_eq!(cache.lookup(&name("web")).await.unwrap()[0].port, 2, "the change invalidated the entry");
    assert_eq!(cache.stats(), (1, 2));
    assert_eq!(cache.lookup(&name("web")).await.unwrap()[0].port, 2);
    assert_eq!(cache.stats(), (2, 2));
    server.stop().await;
}

/// A blocking raw connection, for bytes no client would send (run on a helper thread).
struct Raw {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        Raw { stream, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) -> &mut Raw {
        self.stream.write_all(bytes).unwrap();
        self
    }

    /// The next answer frame: (id, answer).
    fn answer(&mut self) -> (u32, Response) {
        let mut chunk = [0u8; 4096];
        loop {
            if let Decoded::Frame { len, id, body } = wire::decode(&self.buf, wire::MAX_RESPONSE).unwrap() {
                self.buf.drain(..len);
                return (id, body.unwrap());
            }
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed without an answer");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True if the server closed the connection with nothing more to say.
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.stream.read(&mut [0u8; 1]), Ok(0))
    }
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_connection_closes() {
    let server = Running::start(Limits { max_frame: 1024, ..Limits::default() }).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut http = Raw::connect(addr);
        let answer = http.send(b"GET / HTTP/1.1\r\n\r\n").answer();
        assert!(matches!(answer, (0, Response::Error(Error::Invalid(ref why))) if why.contains("magic")), "{answer:?}");
        assert!(http.closed());

        let mut huge = Raw::connect(addr);
        let answer = huge.send(&[wire::MAGIC, wire::VERSION, 0, 0, 16, 0]).answer();
        assert!(matches!(answer, (0, Response::Error(Error::Invalid(ref why))) if why.contains("4096")), "{answer:?}");
        assert!(huge.closed());

        // A malformed body (variant 127) fails its request only; the connection goes on.
        let mut bad = Raw::connect(addr);
        let answer = bad.send(&[wire::MAGIC, wire::VERSION, 0, 0, 0, 5, 0, 0, 0, 9, 0x7f]).answer();
        assert!(matches!(answer, (9, Response::Error(Error::Invalid(_)))), "{answer:?}");
        let mut list = Vec::new();
        wire::encode(10, &wire::Request::List { prefix: String::new() }, 1024, &mut list).unwrap();
        assert!(matches!(bad.send(&list).answer(), (10, Response::Entries { .. })));
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_an_answer() {
    let server = Running::start(Limits { max_conns: 1, ..Limits::default() }).await;
    let first = server.client().await;
    first.list("").await.unwrap();
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut refused = Raw::connect(addr);
        assert!(matches!(refused.answer(), (0, Response::Error(Error::Unavailable(_)))));
        assert!(refused.closed());
    })
    .await
    .unwrap();
    first.list("").await.unwrap();
    let report = server.stop().await;
    assert_eq!((report.accepted, report.refused), (1, 1));
}

#[tokio::test]
async fn shutdown_ends_watches_and_connections() {
    let server = Running::start(Limits::default()).await;
    let client = server.client().await;
    let mut watch = client.watch("", Revision(0)).await.unwrap();
    client.bind(&name("web"), "t", vec![ep(1)]).await.unwrap();
    assert_eq!(watch.next().await.unwrap().len(), 1);
    server.stop().await;
    let end = tokio::time::timeout(T, watch.next()).await.expect("the watch ends");
    assert!(matches!(end, Err(Error::Unavailable(_))), "{end:?}");
    assert!(matches!(client.list("").await, Err(Error::Unavailable(_))));
}

#[tokio::test]
async fn idle_connections_are_closed_but_watching_ones_are_kept() {
    let server = Running::start(Limits { idle_timeout: Duration::from_millis(200), ..Limits::default() }).await;
    let watcher = server.client().await;
    let mut watch = watcher.watch("", Revision(0)).await.unwrap();
    let addr = server.addr;
    tokio::task::spawn_blocking(move || assert!(Raw::connect(addr).closed(), "an idle connection is closed"))
        .await
        .unwrap();
    // The watching connection was idle just as long, and still delivers.
    let writer = server.client().await;
    writer.bind(&name("web"), "t", vec![ep(1)]).await.unwrap();
    assert_eq!(tokio::time::timeout(T, watch.next()).await.unwrap().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_serve_future_stops_its_server() {
    let server = Running::start(Limits::default()).await;
    let client = server.client().await;
    let mut watch = client.watch("", Revision(0)).await.unwrap();
    client.bind(&name("web"), "t", vec![ep(1)]).await.unwrap();
    assert_eq!(watch.next().await.unwrap().len(), 1);
    server.done.abort();
    // The server's own thread, which the aborted task no longer waits for, still stops: its
    // watches end and its listener closes.
    let end = tokio::time::timeout(T, watch.next()).await.expect("the watch ends");
    assert!(matches!(end, Err(Error::Unavailable(_))), "{end:?}");
    let refused = tokio::time::timeout(T, async {
        while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    refused.await.expect("the listener closes");
}
