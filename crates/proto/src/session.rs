//! The one protocol interface every server model drives.
//!
//! Call order, for each connection a driver accepts:
//!
//! 1. [`Service::new_session`], then [`Session::handle_open`] once.
//! 2. Any number of [`Session::handle_input`], [`Session::handle_message`] (a message the hub
//!    addressed to this session), [`Session::handle_timeout`] (when [`Session::poll_timeout`]
//!    has passed; spurious calls are harmless), [`Session::handle_completion`] (a job it started
//!    finished), [`Session::handle_drained`] (everything it queued for the peer has been sent)
//!    and at most one [`Session::handle_read_closed`] (the peer half-closed) and one
//!    [`Session::handle_shutdown`] (the server is stopping). Services served with urgent data
//!    armed also get [`Session::handle_urgent`]; sessions that open streams get
//!    [`Session::handle_connected`], [`Session::handle_stream_input`],
//!    [`Session::handle_stream_closed`] and [`Session::handle_spliced`].
//! 3. After each call the driver sends what the output holds, performs its actions in order,
//!    and once [`Output::is_closed`] holds and everything is sent, closes the connection
//!    (lingering, so that no reset races the last bytes). A session that handed its connection
//!    off ([`Action::HandOff`](crate::Action::HandOff)) gets no further call.
//!
//! The contract is written once, in `warren_models`' connection engine; every model drives
//! sessions through it.
//!
//! A session never blocks and never allocates without bound: limits come from [`Limits`]; what
//! would block is a [`Job`](crate::Job) (see [`crate::effect`]).

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::effect::{StreamId, Token};
use crate::hub::Hub;
use crate::output::Output;

/// The output type of session `S`.
pub type Out<S> = Output<<S as Session>::Request, <S as Session>::Done>;

/// Names one connection, unique across every process of one server.
///
/// Drivers make ids as `pid << 32 | counter`, so that the processes of the `fork` and `prefork`
/// models never hand out the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// What a driver knows about a new connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// This connection's id.
    pub id: SessionId,
    /// The remote address, when the transport has one.
    pub peer: Option<SocketAddr>,
    /// The wall-clock time the connection was accepted (daytime and time report it).
    pub wall: SystemTime,
    /// A seed for any randomness the session needs (the pingpong coin toss).
    pub seed: u64,
}

/// A protocol: makes one [`Session`] per connection and one [`Hub`] per server.
pub trait Service: Send + Sync + 'static {
    /// The state shared by every connection of one server.
    type Hub: Hub;
    /// The per-connection state machine.
    type Session: Session<Request = <Self::Hub as Hub>::Request, Message = <Self::Hub as Hub>::Message>;

    /// The protocol's name, as `warren serve` takes it.
    fn name(&self) -> &'static str;

    /// A new session for a connection accepted at `now`.
    fn new_session(&self, info: &ConnInfo, now: Instant) -> Self::Session;

    /// A new hub for a server started at `now`; called once per server (in the hub process for
    /// `fork` and `prefork`).
    fn new_hub(&self, now: Instant) -> Self::Hub;

    /// Bytes sent to a connection refused because the server is at its limit, before it is
    /// closed. Empty for protocols where any byte would be mistaken for data (echo, time).
    fn refusal(&self) -> &'static [u8] {
        b""
    }

    /// Whether every client speaks first (HTTP). The listener then hands over a connection only
    /// once its first bytes are in (`TCP_DEFER_ACCEPT`; a server model may decline, as `thread`
    /// does), so the first read finds the request and
    /// a short exchange never waits in epoll; a client that connects and says nothing is let in
    /// after a second, to meet the usual read timeout. Never for a protocol where the server
    /// speaks first (daytime, chargen), whose clients would wait that second.
    fn client_speaks_first(&self) -> bool {
        false
    }
}

/// The state machine for one connection. See the module docs for the call order.
pub trait Session: Send + 'static {
    /// What this session asks of the hub.
    type Request;
    /// What the hub sends to this session.
    type Message;
    /// What this session's jobs return ([`Nothing`](crate::Nothing) if it starts none).
    type Done: Send + 'static;

    /// The connection is established.
    fn handle_open(&mut self, now: Instant, out: &mut Output<Self::Request, Self::Done>);

    /// Bytes arrived from the peer. Never called with an empty slice, nor after
    /// `handle_read_closed`, nor once the output is closed.
    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<Self::Request, Self::Done>);

    /// The peer will send nothing more (it half-closed or closed the connection).
    fn handle_read_closed(&mut self, now: Instant, out: &mut Output<Self::Request, Self::Done>);

    /// The hub sent this session a message (an answer, or a push caused by another session).
    fn handle_message(&mut self, now: Instant, msg: Self::Message, out: &mut Output<Self::Request, Self::Done>);

    /// A deadline may have passed.
    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Self::Request, Self::Done>);

    /// The server is shutting down: say goodbye and close.
    fn handle_shutdown(&mut self, now: Instant, out: &mut Output<Self::Request, Self::Done>) {
        let _ = now;
        out.close();
    }

    /// The earliest instant at which `handle_timeout` must be called, if any.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Whether the session takes input now: flow control. While it answers `false` the driver
    /// reads nothing, so the peer's window fills; the session resumes from a timeout or a
    /// message. The driver asks after every call. Default: always.
    fn wants_input(&self) -> bool {
        true
    }

    /// TCP urgent data from the peer. Only drivers serving with urgent data armed (the `thread`,
    /// `pool` and `event` models with `ServeConfig::urgent`) call it; the default ignores it.
    /// After [`Urgent::Pointer`] a session should take input (the bytes before the mark) until
    /// [`Urgent::Mark`], or the urgent byte can never arrive through a full window.
    fn handle_urgent(&mut self, now: Instant, urgent: Urgent, out: &mut Output<Self::Request, Self::Done>) {
        let _ = (now, urgent, out);
    }

    /// Whether closing must linger: shut the write side and drain what the peer still sends
    /// before closing, so that no reset races the last bytes. A session that knows the peer
    /// sends nothing more (it answered a request that asked to close, with nothing behind it)
    /// answers `false`, and the connection closes at once unless input is known to wait, as
    /// nginx closes without lingering when no more data is expected. Asked once, when the
    /// closed session's bytes are all out. Default: `true`.
    fn lingers(&self) -> bool {
        true
    }

    /// The job started with `token` finished with `done`. Sessions that start jobs must
    /// implement it; the default drops the result.
    fn handle_completion(
        &mut self,
        now: Instant,
        token: Token,
        done: Self::Done,
        out: &mut Output<Self::Request, Self::Done>,
    ) {
        let _ = (now, token, done, out);
    }

    /// Everything queued for the peer has been sent (called once each time the queue empties).
    /// A session that streams (chargen) queues more here instead of polling.
    fn handle_drained(&mut self, now: Instant, out: &mut Output<Self::Request, Self::Done>) {
        let _ = (now, out);
    }

    /// The connection started with `token` is open as `stream`, or failed.
    fn handle_connected(
        &mut self,
        now: Instant,
        token: Token,
        result: Result<StreamId, std::io::ErrorKind>,
        out: &mut Output<Self::Request, Self::Done>,
    ) {
        let _ = (now, token, result, out);
    }

    /// Bytes arrived on a stream the session opened.
    fn handle_stream_input(
        &mut self,
        now: Instant,
        stream: StreamId,
        data: &[u8],
        out: &mut Output<Self::Request, Self::Done>,
    ) {
        let _ = (now, stream, data, out);
    }

    /// A stream the session opened will send nothing more (its peer closed, or it failed); the
    /// stream stays until the session closes it with [`Outbox::close`](crate::Outbox::close).
    fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, out: &mut Output<Self::Request, Self::Done>) {
        let _ = (now, stream, out);
    }

    /// A splice from `from` to `to` moved `moved` more bytes (a session may count it as
    /// activity), and `ended` if it is over: `from` ended, the limit was reached, or a stream
    /// failed (then `from` counts as ended too).
    fn handle_spliced(
        &mut self,
        now: Instant,
        from: StreamId,
        to: StreamId,
        moved: u64,
        ended: bool,
        out: &mut Output<Self::Request, Self::Done>,
    ) {
        let _ = (now, from, to, moved, ended, out);
    }
}

/// What a driver learned about TCP urgent data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgent {
    /// The peer sent an urgent byte. Bytes it sent before it may still be arriving through
    /// `handle_input` (SIGURG reports the pointer even while the receive window is full). May
    /// come more than once for one byte: Linux caps the pointer 64 KiB ahead of each segment,
    /// so it moves until the byte is near.
    Pointer,
    /// Every byte sent before the urgent byte has been handed to `handle_input`; this is the
    /// byte (taken out of the stream, inline or not), and what follows was sent after it.
    Mark(u8),
}

/// A datagram protocol: one reply (or none) per datagram, no state between datagrams.
pub trait DatagramService: Send + Sync + 'static {
    /// The protocol's name, as `warren serve` takes it.
    fn name(&self) -> &'static str;

    /// Answer one datagram received at wall-clock time `wall`; append the reply to `reply` and
    /// return `true` to send it.
    fn handle_datagram(&self, wall: SystemTime, input: &[u8], reply: &mut Vec<u8>) -> bool;
}
