//! The state shared by every connection of a server: chat rooms, the game counter.
//!
//! A hub is a sans-IO state machine too. Thread-based models keep one behind a mutex; the
//! `fork` and `prefork` models keep it in a hub process and reach it over a Unix socket, so
//! requests and messages must cross a process boundary: they are [`Wire`] types.

use std::fmt::Debug;
use std::time::Instant;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::session::SessionId;

/// A type that can cross the hub's Unix socket (encoded with postcard).
pub trait Wire: Serialize + DeserializeOwned + Debug + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Debug + Send + 'static> Wire for T {}

/// Shared state: answers requests from sessions with messages addressed to any sessions.
pub trait Hub: Send + 'static {
    /// What a session asks.
    type Request: Wire;
    /// What a session is told. A push to many sessions clones it.
    type Message: Wire + Clone;

    /// Handle a request from session `from`; append the messages to deliver to `out`, in the
    /// order they must arrive.
    fn handle_request(
        &mut self,
        now: Instant,
        from: SessionId,
        request: Self::Request,
        out: &mut Vec<(SessionId, Self::Message)>,
    );

    /// Session `id` is gone (its connection closed). Only called for sessions that made at
    /// least one request.
    fn handle_leave(&mut self, now: Instant, id: SessionId, out: &mut Vec<(SessionId, Self::Message)>);

    /// A summary printed when the server stops (the chat server's statistics).
    fn report(&self, now: Instant) -> Option<String> {
        let _ = now;
        None
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

    fn handle_request(&mut self, _: Instant, _: SessionId, request: Nothing, _: &mut Vec<(SessionId, Nothing)>) {
        match request {}
    }

    fn handle_leave(&mut self, _: Instant, _: SessionId, _: &mut Vec<(SessionId, Nothing)>) {}
}
