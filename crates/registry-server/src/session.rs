//! The registry's binary protocol as a session, served by any of warren's server models.
//!
//! A request is answered by an `await` on the [`Backend`] (a durable commit, an etcd round trip),
//! so each one is a future job: the session starts it and goes on reading, and answers leave in
//! the order their jobs finish, each frame carrying its request's id. A connection's watches wait
//! together in one job at a time (a [`Feed`]): it comes back when any of them has events, with
//! the events of every watch that has some, and the session starts the next once they are
//! queued; so a watch holds no thread, a write seen by every watch of a connection costs that
//! connection one job and one send, and `Cancel` ends a watch between any two of its events.
//!
//! Limits, per connection: at most [`Limits::max_in_flight`] requests at once, at most
//! [`Limits::max_watches`] watches, and at most [`OUTBOX`] bytes of answers queued for the peer
//! *or still to come*: each request in progress holds room for the largest answer it may get
//! ([`answer_room`]: a `List` 1 MiB, a `Lookup` 512 KiB, anything else 4 KiB; a larger answer is
//! replaced by a `TooLarge` error), and a request is started only if its room fits. Past that,
//! no request is read (the engine then stops reading the socket, and gives up on a peer that
//! takes nothing for its write timeout) and no watch fetches more, until the peer has taken its
//! answers. So a client that pipelines `List`s and never reads costs the server at most
//! [`OUTBOX`] bytes plus its watches' last batches, not a copy of the registry per request; a
//! watch whose peer stays behind for long falls out of the store's history, and gets a
//! `Compacted` error that ends it instead of the events it missed. A
//! frame that cannot be read gets an `Error` with id 0 and the connection closes; a body that
//! cannot be read fails only its request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use warren_proto::{Action, ConnInfo, Deadline, Job, Level, NoHub, Nothing, Output, Service, Session, Token};

use futures_util::future::AbortHandle;
use warren_registry::backend::Backend;
use warren_registry::model::{Error, Revision};
use warren_registry::wire::{self, Decoded, MAX_RESPONSE, Request, Response};

use crate::feed::{self, Feed, Joiner, Next};

/// Limits of one server, with the defaults `warren registry` uses.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections beyond this many get an `Unavailable` error frame and are closed (1024).
    pub max_conns: usize,
    /// The largest request frame (64 KiB); a larger one gets an error and the connection closes.
    pub max_frame: usize,
    /// A connection with no request in progress and no watch for this long is closed (5 min).
    pub idle_timeout: Duration,
    /// Requests one connection may have in progress at once (256).
    pub max_in_flight: usize,
    /// Watches one connection may hold at once (64).
    pub max_watches: usize,
    /// A peer that takes no byte of its answers or events for this long is cut off (30 s): with
    /// [`OUTBOX`], what bounds the memory a watcher that stops reading costs.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: 1024,
            max_frame: wire::MAX_REQUEST,
            idle_timeout: Duration::from_secs(300),
            max_in_flight: 256,
            max_watches: 64,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Bytes of answers that may wait for one peer, or be promised to requests in progress, before
/// the session stops reading requests and fetching watch events.
pub const OUTBOX: u64 = 4 << 20;
/// The largest answer to `List` (after the frame header); a larger one is a `TooLarge` error
/// asking for a longer prefix.
pub const MAX_LIST_ANSWER: usize = 1 << 20;
/// The largest answer to `Lookup`: 64 endpoints with full metadata fit.
pub const MAX_LOOKUP_ANSWER: usize = 512 << 10;
/// The largest answer to a write, renewal or release (a revision, a lease, or an error).
pub const MAX_SMALL_ANSWER: usize = 4 << 10;

/// Room a request holds in the outbox while in progress: the largest answer it may get.
pub fn answer_room(request: &Request) -> usize {
    match request {
        Request::List { .. } => MAX_LIST_ANSWER,
        Request::Lookup { .. } => MAX_LOOKUP_ANSWER,
        _ => MAX_SMALL_ANSWER,
    }
}

/// The feed job's token: above every request id.
const FEED: Token = Token(1 << 32);

/// The registry protocol over a backend.
pub struct Registry<B: ?Sized> {
    pub backend: Arc<B>,
    pub limits: Limits,
}

impl<B: ?Sized> std::fmt::Debug for Registry<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("limits", &self.limits).finish()
    }
}

impl<B: Backend + ?Sized> Service for Registry<B> {
    type Hub = NoHub;
    type Session = RegistrySession<B>;

    fn name(&self) -> &'static str {
        "registry"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> RegistrySession<B> {
        let timeouts = warren_proto::Limits {
            idle_timeout: self.limits.idle_timeout,
            read_timeout: self.limits.idle_timeout,
            max_request: 0,
        };
        let (feed, joiner) = feed::feed();
        RegistrySession {
            backend: self.backend.clone(),
            limits: self.limits.clone(),
            buf: Vec::new(),
            in_flight: 0,
            promised: 0,
            watches: HashMap::new(),
            feed: Some(feed),
            joiner,
            deadline: Deadline::new(&timeouts, now),
            stopping: false,
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }

    /// One `Unavailable` error frame (id 0), so that a client over the limit knows why.
    fn refusal(&self) -> &'static [u8] {
        static REFUSAL: OnceLock<Vec<u8>> = OnceLock::new();
        REFUSAL.get_or_init(|| {
            let mut frame = Vec::new();
            let busy = Response::Error(Error::Unavailable("too many connections; try again later".into()));
            wire::encode(0, &busy, MAX_SMALL_ANSWER, &mut frame).expect("small");
            frame
        })
    }
}

/// What a job brings back.
pub enum Done {
    /// The answer to request `id`, which holds `room` bytes of the outbox until it is sent.
    Answer { id: u32, response: Response, room: usize },
    /// The watches that have events (or ended), and the feed the others still wait in.
    Feed { ready: Vec<Next>, feed: Feed },
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Answer { id, .. } => write!(f, "Answer({id})"),
            Done::Feed { ready, .. } => write!(f, "Feed({} ready)", ready.len()),
        }
    }
}

/// One registry connection.
pub struct RegistrySession<B: ?Sized> {
    backend: Arc<B>,
    limits: Limits,
    /// Bytes of the next frame not complete yet.
    buf: Vec<u8>,
    /// Requests whose answers have not come back.
    in_flight: usize,
    /// Bytes of outbox held for their answers (the sum of their `answer_room`).
    promised: usize,
    /// Live watches by id, each with what cancels it in the feed.
    watches: HashMap<u32, AbortHandle>,
    /// Here while no job waits on it: between jobs, or parked until the outbox drains.
    feed: Option<Feed>,
    /// Where watches join the feed, whether a job holds it or not.
    joiner: Joiner,
    deadline: Deadline,
    /// The server is stopping: no new request; close once the answers in progress are out.
    stopping: bool,
}

impl<B: ?Sized> std::fmt::Debug for RegistrySession<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySession")
            .field("in_flight", &self.in_flight)
            .field("watches", &self.watches.len())
            .finish()
    }
}

type Out = Output<Nothing, Done>;

/// Queues one answer of at most `max` bytes; a larger one is replaced by a `TooLarge` error.
fn send(out: &mut Out, id: u32, response: &Response, max: usize) {
    let mut frame = Vec::new();
    if let Err(e) = wire::encode(id, response, max, &mut frame) {
        let e = Response::Error(Error::TooLarge(format!("the answer: {e}; ask for less (a longer prefix)")));
        wire::encode(id, &e, MAX_SMALL_ANSWER, &mut frame).expect("small");
    }
    out.send(&frame);
}

impl<B: Backend + ?Sized> RegistrySession<B> {
    /// Start every whole request in the buffer, while the limits allow.
    fn take_requests(&mut self, out: &mut Out) {
        let mut used = 0;
        while self.takes_requests(out) {
            match wire::decode::<Request>(&self.buf[used..], self.limits.max_frame) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Frame { len, id, body }) => {
                    if let Ok(request) = &body
                        && !self.has_room(answer_room(request), out)
                    {
                        break; // read again once answers have gone out
                    }
                    used += len;
                    match body {
                        Ok(request) => self.start(id, request, out),
                        Err(e) => send(out, id, &Response::Error(e), MAX_SMALL_ANSWER),
                    }
                }
                Err(e) => {
                    send(out, 0, &Response::Error(Error::Invalid(e.to_string())), MAX_SMALL_ANSWER);
                    out.close();
                    self.buf = Vec::new();
                    return;
                }
            }
        }
        self.buf.drain(..used);
    }

    fn takes_requests(&self, out: &Out) -> bool {
        !out.is_closed() && !self.stopping && self.in_flight < self.limits.max_in_flight && self.has_room(0, out)
    }

    /// Whether `room` more bytes fit beside what is queued and promised.
    fn has_room(&self, room: usize, out: &Out) -> bool {
        out.pending_len() + (self.promised + room) as u64 <= OUTBOX
    }

    fn start(&mut self, id: u32, request: Request, out: &mut Out) {
        match request {
            Request::Watch { prefix, from } => self.watch(id, prefix, from, out),
            Request::Cancel { watch } => {
                if let Some(handle) = self.watches.remove(&watch) {
                    handle.abort();
                }
                send(out, watch, &Response::Cancelled, MAX_SMALL_ANSWER);
            }
            request => {
                let room = answer_room(&request);
                self.in_flight += 1;
                self.promised += room;
                let backend = self.backend.clone();
                let job = async move { Done::Answer { id, response: answer(&*backend, request).await, room } };
                out.job(Token(u64::from(id)), Job::future(job));
            }
        }
    }

    fn watch(&mut self, id: u32, prefix: String, from: Revision, out: &mut Out) {
        if self.watches.len() >= self.limits.max_watches || self.watches.contains_key(&id) {
            let why = format!("at most {} watches per connection, ids distinct", self.limits.max_watches);
            return send(out, id, &Response::Error(Error::TooLarge(why)), MAX_SMALL_ANSWER);
        }
        let backend = self.backend.clone();
        let handle = self.joiner.join(async move {
            match backend.watch(&prefix, from).await {
                Ok(mut watch) => Next { id, events: watch.next().await, watch: Some(watch) },
                Err(e) => Next { id, events: Err(e), watch: None },
            }
        });
        self.watches.insert(id, handle);
        self.run_feed(out);
    }

    /// Starts the feed's next job if it is here, has watches, and the outbox has room for their
    /// events; otherwise it waits (for the outbox to drain, or for a watch).
    fn run_feed(&mut self, out: &mut Out) {
        if self.watches.is_empty() || out.pending_len() >= OUTBOX {
            return;
        }
        if let Some(feed) = self.feed.take() {
            let job = async move {
                let (ready, feed) = feed.next().await;
                Done::Feed { ready, feed }
            };
            out.job(FEED, Job::future(job));
        }
    }

    /// Queues the events of the watches that have some, and puts them back to wait.
    fn deliver(&mut self, ready: Vec<Next>, out: &mut Out) {
        for Next { id, events, watch } in ready {
            if !self.watches.contains_key(&id) {
                continue; // cancelled meanwhile
            }
            match (events, watch) {
                (Ok(events), Some(mut watch)) => {
                    for chunk in wire::chunks(&events) {
                        send(out, id, &Response::Events { events: chunk.to_vec() }, MAX_RESPONSE);
                    }
                    let handle =
                        self.joiner.join(async move { Next { id, events: watch.next().await, watch: Some(watch) } });
                    self.watches.insert(id, handle);
                }
                (Err(e), _) => {
                    self.watches.remove(&id);
                    send(out, id, &Response::Error(e), MAX_SMALL_ANSWER);
                }
                (Ok(_), None) => {
                    self.watches.remove(&id);
                }
            }
        }
    }

    fn finish_if_stopped(&mut self, out: &mut Out) {
        if self.stopping && self.in_flight == 0 {
            out.close();
        }
    }
}

impl<B: Backend + ?Sized> Session for RegistrySession<B> {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Done;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.buf.extend_from_slice(data);
        self.deadline.input(now, false);
        self.take_requests(out);
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        // Answers in progress still go out; watches end with the connection.
        self.stopping = true;
        self.watches.clear();
        // Dropping the feed, here or in its job, drops every watch in it.
        if self.feed.take().is_none() {
            out.act(Action::Abort(FEED));
        }
        self.finish_if_stopped(out);
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_completion(&mut self, now: Instant, _: Token, done: Done, out: &mut Out) {
        self.deadline.touch(now);
        match done {
            Done::Answer { id, response, room } => {
                self.in_flight -= 1;
                self.promised -= room;
                send(out, id, &response, room);
                self.take_requests(out);
                self.finish_if_stopped(out);
            }
            Done::Feed { ready, feed } => {
                if self.stopping {
                    return; // the watches ended with the connection
                }
                self.feed = Some(feed);
                self.deliver(ready, out);
                self.run_feed(out);
            }
        }
    }

    fn handle_drained(&mut self, _: Instant, out: &mut Out) {
        self.run_feed(out);
        self.take_requests(out);
    }

    /// Not while requests wait in the buffer for room: reading on would only grow it.
    fn wants_input(&self) -> bool {
        !self.stopping
            && self.in_flight < self.limits.max_in_flight
            && self.buf.len() < self.limits.max_frame + wire::HEADER
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if self.in_flight == 0 && self.watches.is_empty() && self.deadline.expired(now).is_some() {
            out.log(Level::Debug, "registry: idle; closing");
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.in_flight == 0 && self.watches.is_empty()).then(|| self.deadline.at())
    }

    fn handle_shutdown(&mut self, now: Instant, out: &mut Out) {
        self.handle_read_closed(now, out);
    }
}

/// The backend's answer to one request (watches and cancels are the session's own).
async fn answer<B: Backend + ?Sized>(backend: &B, request: Request) -> Response {
    let result = match request {
        Request::Lookup { name } => {
            backend.lookup(&name).await.map(|(revision, entry)| Response::Found { revision, entry })
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
        Request::Renew { lease, token } => {
            backend.renew(lease, &token).await.map(|ttl| Response::Renewed { ttl_ms: millis(ttl) })
        }
        Request::Release { lease, token } => {
            backend.release(lease, &token).await.map(|revision| Response::Written { revision })
        }
        Request::Watch { .. } | Request::Cancel { .. } => unreachable!("the session's own"),
    };
    result.unwrap_or_else(Response::Error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
