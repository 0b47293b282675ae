//! Watch latency with 1, 100 and 10,000 watchers on one name, warren against etcd.
//!
//! Watchers are spread over connections of [`PER_CONNECTION`] watches each (under the
//! registry's 64 per connection): 1, 2 and 200 connections. etcd gets the same number of watch
//! streams over as many client connections, each stream carrying its share of the watches, as
//! an etcd client multiplexes its watches on one gRPC stream.
//!
//! The writer runs on a thread of its own (and its own connection), so that the watchers'
//! events, handled on the bench's thread, do not delay the moment its acknowledgement is seen.
//! Writes go one at a time; for each the bench takes the instant every watcher had the event
//! and reports, over the writes, the **last** watcher's delay (write sent → every watcher has
//! it) and the **median** watcher's, beside the writer's own acknowledgement time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_client::WatchOptions;
use tokio::sync::{Notify, mpsc, oneshot};
use warren_registry::client::Client;
use warren_registry::model::{EventKind, Name};

use super::{TOKEN, endpoint};
use crate::hist::Histogram;

/// The watcher counts the bench reports.
pub(super) const WATCHERS: [usize; 3] = [1, 100, 10_000];
/// Watches per warren connection, and per etcd watch stream.
pub(super) const PER_CONNECTION: usize = 50;
/// How long every watcher may take to have one event before the run fails.
const STALL: Duration = Duration::from_secs(10);
const KEY: &str = "/bench/watched";
const NAME: &str = "bench.watched";

/// Writes timed with `watchers` watchers: `samples` with one or a hundred; fewer with more, so
/// that the part stays under a minute (each write then costs a fan-out of 10,000 events on each
/// side), but never fewer than 200, so that a p99 is still the 99th of something.
pub(super) fn samples_for(samples: usize, watchers: usize) -> usize {
    if watchers <= 100 { samples } else { (samples * 100 / watchers).max(200).min(samples) }
}

/// One server's figures with one number of watchers.
#[derive(Default)]
pub(super) struct Fanout {
    pub writes: usize,
    /// Write sent → the last watcher has the event.
    pub last: Histogram,
    /// Write sent → half of the watchers have the event.
    pub median: Histogram,
    /// Write sent → the writer has its acknowledgement.
    pub ack: Histogram,
}

/// Which server to watch and write.
#[derive(Clone)]
pub(super) enum Target {
    Warren(SocketAddr),
    Etcd(String),
}

/// When each watcher had the current write's event.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<Vec<Instant>>,
    changed: Notify,
}

impl Arrivals {
    fn arrived(&self) {
        self.seen.lock().expect("arrivals").push(Instant::now());
        self.changed.notify_one();
    }

    /// Waits until `n` watchers had the event; their instants, sorted, and cleared for the next.
    async fn all(&self, n: usize) -> anyhow::Result<Vec<Instant>> {
        let deadline = tokio::time::Instant::now() + STALL;
        loop {
            {
                let mut seen = self.seen.lock().expect("arrivals");
                if seen.len() >= n {
                    let mut all = std::mem::take(&mut *seen);
                    all.sort();
                    return Ok(all);
                }
            }
            if tokio::time::timeout_at(deadline, self.changed.notified()).await.is_err() {
                let got = self.seen.lock().expect("arrivals").len();
                bail!("only {got} of {n} watchers had the event within {STALL:?}");
            }
        }
    }
}

/// Times `samples` writes with `watchers` watchers on `target`.
pub(super) async fn measure(target: &Target, watchers: usize, samples: usize) -> anyhow::Result<Fanout> {
    let arrivals = Arc::new(Arrivals::default());
    let mut tasks = tokio::task::JoinSet::new();
    match target {
        Target::Warren(addr) => start_warren_watchers(*addr, watchers, &arrivals, &mut tasks).await?,
        Target::Etcd(url) => start_etcd_watchers(url, watchers, &arrivals, &mut tasks).await?,
    }
    let writer = Writer::spawn(target.clone())?;
    // One write first, so that every watch is known to be live before any is timed.
    writer.write(0).await?;
    arrivals.all(watchers).await.context("the first write")?;
    let mut fanout = Fanout { writes: samples, ..Fanout::default() };
    for n in 1..=samples as u64 {
        let (seen, times) = tokio::join!(arrivals.all(watchers), writer.write(n));
        let (seen, (sent, acked)) = (seen?, times?);
        fanout.last.record(seen[seen.len() - 1].saturating_duration_since(sent));
        fanout.median.record(seen[seen.len() / 2].saturating_duration_since(sent));
        fanout.ack.record(acked - sent);
    }
    tasks.abort_all();
    Ok(fanout)
}

/// warren: `watchers` watches on `NAME` over connections of `PER_CONNECTION`, one task each.
async fn start_warren_watchers(
    addr: SocketAddr,
    watchers: usize,
    arrivals: &Arc<Arrivals>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let first = Client::connect(addr, Duration::from_secs(5)).await?;
    let (rev, _) = first.list(NAME).await?;
    let mut clients = vec![first];
    for i in 0..watchers {
        if i / PER_CONNECTION >= clients.len() {
            clients.push(Client::connect(addr, Duration::from_secs(5)).await?);
        }
        let mut watch = clients[i / PER_CONNECTION].watch(NAME, rev).await?;
        let arrivals = arrivals.clone();
        tasks.spawn(async move {
            while let Ok(events) = watch.next().await {
                if events.iter().any(|e| e.kind == EventKind::Put) {
                    arrivals.arrived();
                }
            }
        });
    }
    Ok(())
}

/// etcd: as many watch streams as warren has connections, each with its share of the watches,
/// one task per stream.
async fn start_etcd_watchers(
    url: &str,
    watchers: usize,
    arrivals: &Arc<Arrivals>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    for first in (0..watchers).step_by(PER_CONNECTION) {
        let here = PER_CONNECTION.min(watchers - first);
        let mut client = etcd_client::Client::connect([url], None).await?;
        let mut stream = client.watch(KEY, Some(WatchOptions::new())).await?;
        for _ in 1..here {
            stream.watch(KEY, Some(WatchOptions::new())).await?;
        }
        let mut created = 0;
        while created < here {
            let m = tokio::time::timeout(STALL, stream.message()).await.context("etcd did not confirm a watch")??;
            if !m.context("etcd ended the watch stream")?.created() {
                bail!("etcd sent events before confirming its watches");
            }
            created += 1;
        }
        let arrivals = arrivals.clone();
        tasks.spawn(async move {
            let _client = client; // the stream's connection
            while let Ok(Some(m)) = stream.message().await {
                if !m.events().is_empty() {
                    arrivals.arrived();
                }
            }
        });
    }
    Ok(())
}

type Timed = (Instant, Instant);

/// The writer, on its own thread and runtime: each write is timed from the moment it is sent
/// to the moment its acknowledgement is in.
struct Writer {
    requests: mpsc::Sender<(u64, oneshot::Sender<anyhow::Result<Timed>>)>,
}

impl Writer {
    fn spawn(target: Target) -> anyhow::Result<Writer> {
        let (requests, mut rx) = mpsc::channel::<(u64, oneshot::Sender<anyhow::Result<Timed>>)>(1);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Ends when `requests` is dropped.
        std::thread::Builder::new().name("bench-writer".into()).spawn(move || {
            rt.block_on(async move {
                let mut write = match Write::connect(&target).await {
                    Ok(w) => w,
                    Err(e) => {
                        if let Some((_, reply)) = rx.recv().await {
                            let _ = reply.send(Err(e));
                        }
                        return;
                    }
                };
                while let Some((n, reply)) = rx.recv().await {
                    let sent = Instant::now();
                    let result = write.put(n).await.map(|()| (sent, Instant::now()));
                    let _ = reply.send(result);
                }
            });
        })?;
        Ok(Writer { requests })
    }

    async fn write(&self, n: u64) -> anyhow::Result<Timed> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((n, reply)).await.map_err(|_| anyhow::anyhow!("the writer thread ended"))?;
        answer.await.context("the writer thread ended")?
    }
}

enum Write {
    Warren(Client, Name),
    Etcd(Box<etcd_client::Client>),
}

impl Write {
    async fn connect(target: &Target) -> anyhow::Result<Write> {
        Ok(match target {
            Target::Warren(addr) => {
                Write::Warren(Client::connect(*addr, Duration::from_secs(5)).await?, Name::new(NAME)?)
            }
            Target::Etcd(url) => Write::Etcd(Box::new(etcd_client::Client::connect([url], None).await?)),
        })
    }

    async fn put(&mut self, n: u64) -> anyhow::Result<()> {
        match self {
            Write::Warren(client, name) => _ = client.rebind(name, TOKEN, vec![endpoint(0, n)]).await?,
            Write::Etcd(client) => _ = client.put(KEY, serde_json::to_vec(&endpoint(0, n))?, None).await?,
        }
        Ok(())
    }
}
