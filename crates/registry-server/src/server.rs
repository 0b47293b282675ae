//! The registry server: the binary protocol over TCP, in front of any [`Backend`].
//!
//! This is a driver of its own rather than a `warren_models` session: a registry request is an
//! `await` on an async backend (a durable commit, or an etcd round trip), and a watch is a
//! stream that lives beside the connection's other requests. A sans-IO session answers from
//! its own state, in order; here answers come back out of order and watches push at any time,
//! which is what tokio tasks are for.
//!
//! Per connection: one reader decodes frames and starts a task per request (at most
//! `max_in_flight` at once, so a client that never reads stops being read), one writer sends
//! every answer and watch frame in the order they are ready, coalescing those that wait.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use warren_registry::backend::Backend;
use warren_registry::model::{Error, Revision};
use warren_registry::wire::{self, Decoded, MAX_RESPONSE, Request, Response};

/// Limits of one server, with the defaults `warren registry` uses.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections beyond this many get an `Unavailable` error frame and are closed (1024).
    pub max_conns: usize,
    /// The largest request frame (64 KiB); a larger one gets an error and the connection closes.
    pub max_frame: usize,
    /// A connection with no request, answer in progress or watch for this long is closed, and
    /// so is one whose peer takes this long to take one batch of answers (5 min).
    pub idle_timeout: Duration,
    /// Requests one connection may have in progress at once (256).
    pub max_in_flight: usize,
    /// Watches one connection may hold at once (64).
    pub max_watches: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: 1024,
            max_frame: wire::MAX_REQUEST,
            idle_timeout: Duration::from_secs(300),
            max_in_flight: 256,
            max_watches: 64,
        }
    }
}

/// What a server did, for its closing line.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: u64,
    pub refused: u64,
}

/// Frames waiting for the writer, per connection.
const OUTBOX: usize = 1024;
/// How long connections get to finish their answers once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` completes, then stops accepting, ends every watch, lets
/// answers in progress go out (for up to 5 s) and returns.
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Report {
    let (stop_tx, stop) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_conns));
    let limits = Arc::new(limits);
    let mut report = Report::default();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        report.accepted += 1;
                        let (backend, limits, stop) = (backend.clone(), limits.clone(), stop.clone());
                        conns.spawn(async move {
                            connection(backend, stream, &limits, stop).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        report.refused += 1;
                        conns.spawn(refuse(stream));
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
    report
}

async fn refuse(mut stream: TcpStream) {
    let mut frame = Vec::new();
    let busy = Response::Error(Error::Unavailable("too many connections; try again later".into()));
    wire::encode(0, &busy, MAX_RESPONSE, &mut frame).expect("small");
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
}

async fn connection<B: Backend>(backend: Arc<B>, stream: TcpStream, limits: &Limits, mut stop: watch::Receiver<bool>) {
    let (mut reader, writer) = stream.into_split();
    let (out, frames) = mpsc::channel::<Vec<u8>>(OUTBOX);
    let writing = tokio::spawn(write_frames(writer, frames, limits.idle_timeout));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut watches: HashMap<u32, AbortHandle> = HashMap::new();
    let mut buf = Vec::with_capacity(4096);
    'conn: loop {
        // Answer every whole frame in the buffer, then read more.
        let mut used = 0;
        loop {
            match wire::decode::<Request>(&buf[used..], limits.max_frame) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Frame { len, id, body }) => {
                    used += len;
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break 'conn };
                    let request = match body {
                        Ok(request) => request,
                        Err(e) => {
                            send(&out, id, &Response::Error(e)).await;
                            continue;
                        }
                    };
                    match request {
                        Request::Watch { prefix, from } => {
                            watches.retain(|_, h| !h.is_finished());
                            if watches.len() >= limits.max_watches || watches.contains_key(&id) {
                                let e = Error::TooLarge(format!(
                                    "at most {} watches per connection, ids distinct",
                                    limits.max_watches
                                ));
                                send(&out, id, &Response::Error(e)).await;
                                continue;
                            }
                            let task = tokio::spawn(stream_watch(backend.clone(), out.clone(), id, prefix, from));
                            watches.insert(id, task.abort_handle());
                        }
                        Request::Cancel { watch } => {
                            if let Some(task) = watches.remove(&watch) {
                                task.abort();
                            }
                            send(&out, watch, &Response::Cancelled).await;
                        }
                        request => {
                            let (backend, out) = (backend.clone(), out.clone());
                            tokio::spawn(async move {
                                send(&out, id, &answer(&*backend, request).await).await;
                                drop(permit);
                            });
                        }
                    }
                }
                Err(e) => {
                    send(&out, 0, &Response::Error(Error::Invalid(e.to_string()))).await;
                    break 'conn;
                }
            }
        }
        buf.drain(..used);
        let mut chunk = [0u8; 16 * 1024];
        tokio::select! {
            read = tokio::time::timeout(limits.idle_timeout, reader.read(&mut chunk)) => match read {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_idle) => {
                    watches.retain(|_, h| !h.is_finished());
                    let busy = in_flight.available_permits() < limits.max_in_flight;
                    if watches.is_empty() && !busy {
                        break;
                    }
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
            // The writer gave up on a peer that does not read: nothing more can be answered.
            () = out.closed() => break,
        }
    }
    watches.values().for_each(AbortHandle::abort);
    drop(out);
    // The writer ends once every request task has sent its answer and dropped its sender.
    let _ = writing.await;
}

/// Writes frames as they come, coalescing those that wait; gives up on a peer that takes longer
/// than `patience` to take one batch (it reads nothing: a slow-reader attack or a dead host).
async fn write_frames(mut writer: OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>, patience: Duration) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        batch.extend_from_slice(&frame);
        while batch.len() < 64 * 1024 {
            let Ok(more) = frames.try_recv() else { break };
            batch.extend_from_slice(&more);
        }
        if !matches!(tokio::time::timeout(patience, writer.write_all(&batch)).await, Ok(Ok(()))) {
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}

async fn send(out: &mpsc::Sender<Vec<u8>>, id: u32, response: &Response) {
    let mut frame = Vec::new();
    if let Err(e) = wire::encode(id, response, MAX_RESPONSE, &mut frame) {
        let e = Response::Error(Error::TooLarge(format!("the answer: {e}; ask for less (a longer prefix)")));
        wire::encode(id, &e, MAX_RESPONSE, &mut frame).expect("small");
    }
    // A closed writer means the peer is gone; the answer has nowhere to go.
    let _ = out.send(frame).await;
}

async fn answer<B: Backend + ?Sized>(backend: &B, request: Request) -> Response {
    let result = match request {
        Request::Lookup { name } => {
            backend.lookup(&name).await.map(|(revision, endpoints)| Response::Endpoints { revision, endpoints })
        }
        Request::List { prefix } => {
            backend.list(&prefix).await.map(|(revision, entries)| Response::Entries { revision, entries })
        }
        Request::Bind { name, token, endpoints } => {
            backend.bind(&name, &token, endpoints).await.map(|revision| Response::Written { revision })
        }
        Request::Rebind { name, token, endpoints } => {
            backend.rebind(&name, &token, endpoints).await.map(|revision| Response::Written { revision })
        }
        Request::Unbind { name, token } => {
            backend.unbind(&name, &token).await.map(|revision| Response::Written { revision })
        }
        Request::Register { name, token, endpoint, ttl_ms } => {
            let ttl = Duration::from_millis(ttl_ms);
            backend.register(&name, &token, endpoint, ttl).await.map(|lease| Response::Leased {
                lease: lease.id,
                ttl_ms: millis(lease.ttl),
                revision: lease.revision,
            })
        }
        Request::Renew { lease } => backend.renew(lease).await.map(|ttl| Response::Renewed { ttl_ms: millis(ttl) }),
        Request::Release { lease, token } => {
            backend.release(lease, &token).await.map(|revision| Response::Written { revision })
        }
        Request::Watch { .. } | Request::Cancel { .. } => unreachable!("handled by the connection"),
    };
    result.unwrap_or_else(Response::Error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn stream_watch<B: Backend>(
    backend: Arc<B>,
    out: mpsc::Sender<Vec<u8>>,
    id: u32,
    prefix: String,
    from: Revision,
) {
    let mut watch = match backend.watch(&prefix, from).await {
        Ok(watch) => watch,
        Err(e) => return send(&out, id, &Response::Error(e)).await,
    };
    loop {
        match watch.next().await {
            Ok(events) => {
                for chunk in wire::chunks(&events) {
                    send(&out, id, &Response::Events { events: chunk.to_vec() }).await;
                }
                if out.is_closed() {
                    return;
                }
            }
            Err(e) => return send(&out, id, &Response::Error(e)).await,
        }
    }
}
