//! The state shared by every connection of a server: chat rooms, the game counter.
//!
//! A hub is a sans-IO state machine too. Thread-based models keep one behind a mutex; the
//! `fork` and `prefork` models keep it in a hub process and reach it over a Unix socket, so
//! requests and messages must cross a process boundary: they are [`Wire`] types.

use std::fmt::Debug;
use std::time::Instant;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::effect::{Job, Token};
use crate::session::SessionId;

/// A type that can cross the hub's Unix socket (encoded with postcard).
pub trait Wire: Serialize + DeserializeOwned + Debug + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Debug + Send + 'static> Wire for T {}

/// Shared state: answers requests from sessions with messages addressed to any sessions.
///
/// A hub never waits either: what would block (appending to a journal and syncing it) is a
/// [`Job`] whose result comes back through [`Hub::handle_completion`], and its own deadlines
/// (lease expiry) come through [`Hub::poll_timeout`] and [`Hub::handle_timeout`]. Drivers run a
/// hub's jobs outside whatever lock guards it, so no session waits on a hub's disk.
pub trait Hub: Send + 'static {
    /// What a session asks.
    type Request: Wire;
    /// What a session is told. A push to many sessions clones it.
    type Message: Wire + Clone;
    /// What the hub's jobs return ([`Nothing`] if it starts none).
    type Done: Send + 'static;

    /// Handle a request from session `from`; put the messages to deliver in `out`, in the
    /// order they must arrive.
    fn handle_request(&mut self, now: Instant, from: SessionId, request: Self::Request, out: &mut HubOutput<Self>);

    /// Session `id` is gone (its connection closed). Only called for sessions that made at
    /// least one request.
    fn handle_leave(&mut self, now: Instant, id: SessionId, out: &mut HubOutput<Self>);

    /// The job started with `token` finished.
    fn handle_completion(&mut self, now: Instant, token: Token, done: Self::Done, out: &mut HubOutput<Self>) {
        let _ = (now, token, done, out);
    }

    /// A deadline may have passed.
    fn handle_timeout(&mut self, now: Instant, out: &mut HubOutput<Self>) {
        let _ = (now, out);
    }

    /// The earliest instant at which `handle_timeout` must be called, if any.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// A summary printed when the server stops (the chat server's statistics).
    fn report(&self, now: Instant) -> Option<String> {
        let _ = now;
        None
    }
}

/// What a hub hands back to its driver: messages for sessions, in delivery order, and jobs.
pub struct HubOutput<H: Hub + ?Sized> {
    messages: Vec<(SessionId, H::Message)>,
    jobs: Vec<(Token, Job<H::Done>)>,
}

impl<H: Hub + ?Sized> Default for HubOutput<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hub + ?Sized> std::fmt::Debug for HubOutput<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOutput").field("messages", &self.messages).field("jobs", &self.jobs.len()).finish()
    }
}

impl<H: Hub + ?Sized> Extend<(SessionId, H::Message)> for HubOutput<H> {
    fn extend<I: IntoIterator<Item = (SessionId, H::Message)>>(&mut self, messages: I) {
        self.messages.extend(messages);
    }
}

impl<H: Hub + ?Sized> HubOutput<H> {
    pub const fn new() -> Self {
        Self { messages: Vec::new(), jobs: Vec::new() }
    }

    /// Deliver `message` to session `to`.
    pub fn push(&mut self, to: SessionId, message: H::Message) {
        self.messages.push((to, message));
    }

    /// Start `job`; its result comes back with `token`.
    pub fn job(&mut self, token: Token, job: Job<H::Done>) {
        self.jobs.push((token, job));
    }

    /// The messages to deliver, in order.
    pub fn drain_messages(&mut self) -> std::vec::Drain<'_, (SessionId, H::Message)> {
        self.messages.drain(..)
    }

    /// The jobs to start.
    pub fn drain_jobs(&mut self) -> std::vec::Drain<'_, (Token, Job<H::Done>)> {
        self.jobs.drain(..)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.jobs.is_empty()
    }
}

/// A value that cannot exist: the request and message type of protocols without shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nothing {}

/// The hub of protocols that share nothing between connections.
#[derive(Debug, Default)]
pub struct NoHub;

impl Hub for NoHub {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_request(&mut self, _: Instant, _: SessionId, request: Nothing, _: &mut HubOutput<Self>) {
        match request {}
    }

    fn handle_leave(&mut self, _: Instant, _: SessionId, _: &mut HubOutput<Self>) {}
}
