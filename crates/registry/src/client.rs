//! The async client: one connection, any number of requests in flight (pipelined), watches
//! multiplexed on it; and [`Cache`], lookups kept until a watch says they changed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::backend::Lease;
use crate::model::{Endpoint, Entry, Error, Event, LeaseId, Name, Revision};
use crate::wire::{self, Decoded, MAX_REQUEST, MAX_RESPONSE, Request, Response};

/// Watch frames buffered per watch before the connection stops reading.
const WATCH_BUFFER: usize = 1024;

enum Waiter {
    Once(oneshot::Sender<Response>),
    Stream(mpsc::Sender<Response>),
}

/// Who waits for which answer; `None` once the connection is lost, so no call waits forever.
type Waiters = Arc<Mutex<Option<HashMap<u32, Waiter>>>>;

/// A connection to a registry server. Cheap to clone; every clone shares the connection.
#[derive(Clone, Debug)]
pub struct Client {
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    next_id: Arc<AtomicU32>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

fn lost() -> Error {
    Error::Unavailable("connection to the registry lost".into())
}

fn unexpected(r: Response) -> Error {
    match r {
        Response::Error(e) => e,
        other => Error::Invalid(format!("unexpected answer {other:?}")),
    }
}

impl Client {
    /// Connects (within `timeout`) and starts the connection's reader and writer tasks.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect {addr}: timed out")))??;
        stream.set_nodelay(true)?;
        let (reader, mut writer) = stream.into_split();
        let (out, mut frames) = mpsc::channel::<Vec<u8>>(1024);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(frame) = frames.recv().await {
                batch.extend_from_slice(&frame);
                while let Ok(more) = frames.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        });
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(read_answers(reader, waiters.clone()));
        Ok(Client { out, waiters, next_id: Arc::new(AtomicU32::new(1)) })
    }

    async fn send(&self, request: &Request, waiter: impl FnOnce() -> Waiter) -> Result<u32, Error> {
        let id = {
            let mut guard = self.waiters.lock().expect("waiters");
            let waiters = guard.as_mut().ok_or_else(lost)?;
            // Ids wrap after 2^32 requests: skip 0 (connection errors) and any still in use.
            let id = std::iter::repeat_with(|| self.next_id.fetch_add(1, Ordering::Relaxed))
                .find(|id| *id != 0 && !waiters.contains_key(id))
                .expect("fewer than 2^32 requests in flight");
            waiters.insert(id, waiter());
            id
        };
        let mut frame = Vec::new();
        if let Err(e) = wire::encode(id, request, MAX_REQUEST, &mut frame) {
            self.waiters.lock().expect("waiters").as_mut().map(|w| w.remove(&id));
            return Err(Error::TooLarge(e.to_string()));
        }
        if self.out.send(frame).await.is_err() {
            self.waiters.lock().expect("waiters").as_mut().map(|w| w.remove(&id));
            return Err(lost());
        }
        Ok(id)
    }

    async fn call(&self, request: Request) -> Result<Response, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(&request, || Waiter::Once(tx)).await?;
        match rx.await.map_err(|_| lost())? {
            Response::Error(e) => Err(e),
            answer => Ok(answer),
        }
    }

    /// The name as the registry spells it, with its endpoints.
    pub async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        match self.call(Request::Lookup { name: name.clone() }).await? {
            Response::Found { revision, entry } => Ok((revision, entry)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        match self.call(Request::List { prefix: prefix.into() }).await? {
            Response::Entries { revision, entries } => Ok((revision, entries)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        written(self.call(Request::Bind { name: name.clone(), token: token.into(), endpoints }).await?)
    }

    pub async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        written(self.call(Request::Rebind { name: name.clone(), token: token.into(), endpoints }).await?)
    }

    pub async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error> {
        written(self.call(Request::Unbind { name: name.clone(), token: token.into() }).await?)
    }

    pub async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        match self.call(Request::Register { name: name.clone(), token: token.into(), endpoint, ttl_ms }).await? {
            Response::Leased { lease, ttl_ms, revision } => {
                Ok(Lease { id: lease, ttl: Duration::from_millis(ttl_ms), revision })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Renews a lease: `token` must be the one that registered it.
    pub async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error> {
        match self.call(Request::Renew { lease, token: token.into() }).await? {
            Response::Renewed { ttl_ms } => Ok(Duration::from_millis(ttl_ms)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error> {
        written(self.call(Request::Release { lease, token: token.into() }).await?)
    }

    /// Events after `from` for names starting with `prefix`, until the watch is dropped.
    pub async fn watch(&self, prefix: &str, from: Revision) -> Result<ClientWatch, Error> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let id = self.send(&Request::Watch { prefix: prefix.into(), from }, || Waiter::Stream(tx)).await?;
        Ok(ClientWatch { id, rx, client: self.clone() })
    }
}

fn written(r: Response) -> Result<Revision, Error> {
    match r {
        Response::Written { revision } => Ok(revision),
        other => Err(unexpected(other)),
    }
}

/// Hands each answer to whoever waits for its id; on a lost connection, fails them all.
async fn read_answers(mut reader: OwnedReadHalf, waiters: Waiters) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let mut used = 0;
        loop {
            match wire::decode::<Response>(&buf[used..], MAX_RESPONSE) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Frame { len, id, body }) => {
                    used += len;
                    let answer = body.unwrap_or_else(Response::Error);
                    let stream = {
                        let mut guard = waiters.lock().expect("waiters");
                        let waiters = guard.as_mut().expect("set while reading");
                        match waiters.remove(&id) {
                            Some(Waiter::Once(tx)) => {
                                let _ = tx.send(answer);
                                continue;
                            }
                            Some(Waiter::Stream(tx)) => {
                                // A watch stays registered until its last frame.
                                if matches!(answer, Response::Events { .. }) {
                                    waiters.insert(id, Waiter::Stream(tx.clone()));
                                }
                                tx
                            }
                            None => continue,
                        }
                    };
                    // Blocks the connection while this watch's reader is behind: backpressure.
                    let _ = stream.send(answer).await;
                }
                Err(_) => break 'read,
            }
        }
        buf.drain(..used);
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Dropping every waiter fails each pending call and ends each watch with `Unavailable`.
    waiters.lock().expect("waiters").take();
}

/// A watch on a client connection. Dropping it cancels it on the server.
#[derive(Debug)]
pub struct ClientWatch {
    id: u32,
    rx: mpsc::Receiver<Response>,
    client: Client,
}

impl ClientWatch {
    /// The next events, in revision order; an error ends the watch.
    pub async fn next(&mut self) -> Result<Vec<Event>, Error> {
        match self.rx.recv().await.ok_or_else(lost)? {
            Response::Events { events } => Ok(events),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        self.client.waiters.lock().expect("waiters").as_mut().map(|w| w.remove(&self.id));
        let mut frame = Vec::new();
        if wire::encode(0, &Request::Cancel { watch: self.id }, MAX_REQUEST, &mut frame).is_ok() {
            // Best effort: if the connection is busy or gone, the server ends the watch with it.
            let _ = self.client.out.try_send(frame);
        }
    }
}

/// Lookups kept in memory until a watch reports a change to their name.
///
/// The first miss starts a watch from the revision that lookup was read at; an answer read at
/// revision `r` is kept only if the watch has delivered nothing newer than `r`, so no change can
/// slip between an answer and the watch. If the watch ends (compaction, lost connection) the
/// cache empties and the next miss starts again.
#[derive(Debug)]
pub struct Cache {
    client: Client,
    state: Arc<Mutex<CacheState>>,
    /// Woken whenever the watch delivers events.
    moved: Arc<Notify>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<Name, Vec<Endpoint>>,
    /// The newest revision the watch delivered; `None` while no watch runs.
    seen: Option<Revision>,
    follower: Option<AbortHandle>,
    hits: u64,
    misses: u64,
}

impl Cache {
    pub fn new(client: Client) -> Cache {
        Cache { client, state: Arc::default(), moved: Arc::default() }
    }

    /// The name's endpoints, from memory if they have not changed since they were read.
    pub async fn lookup(&self, name: &Name) -> Result<Vec<Endpoint>, Error> {
        {
            let mut state = self.state.lock().expect("cache");
            if let Some(endpoints) = state.entries.get(name).cloned() {
                state.hits += 1;
                return Ok(endpoints);
            }
            state.misses += 1;
        }
        let (revision, Entry { endpoints, .. }) = self.client.lookup(name).await?;
        if self.state.lock().expect("cache").seen.is_none() {
            let watch = self.client.watch("", revision).await?;
            let mut state = self.state.lock().expect("cache");
            if state.seen.is_none() {
                state.seen = Some(revision);
                let follower = tokio::spawn(follow(watch, self.state.clone(), self.moved.clone()));
                state.follower = Some(follower.abort_handle());
            }
        }
        let mut state = self.state.lock().expect("cache");
        if state.seen.is_some_and(|seen| revision >= seen) {
            state.entries.insert(name.clone(), endpoints.clone());
        }
        Ok(endpoints)
    }

    /// Waits until the cache has heard of every change up to `revision` (a write's answer), so
    /// that a lookup after it reflects that write: read-your-writes. False if no watch runs.
    pub async fn caught_up(&self, revision: Revision) -> bool {
        loop {
            let moved = self.moved.notified();
            match self.state.lock().expect("cache").seen {
                Some(seen) if seen >= revision => return true,
                Some(_) => {}
                None => return false,
            }
            moved.await;
        }
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        let state = self.state.lock().expect("cache");
        (state.hits, state.misses)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(follower) = self.state.lock().expect("cache").follower.take() {
            follower.abort();
        }
    }
}

async fn follow(mut watch: ClientWatch, state: Arc<Mutex<CacheState>>, moved: Arc<Notify>) {
    loop {
        let next = watch.next().await;
        let mut state = state.lock().expect("cache");
        moved.notify_waiters();
        match next {
            Ok(events) => {
                for event in events {
                    state.entries.remove(&event.name);
                    state.seen = state.seen.max(Some(event.revision));
                }
            }
            Err(_) => {
                state.entries.clear();
                state.seen = None;
                state.follower = None;
                return;
            }
        }
    }
}
