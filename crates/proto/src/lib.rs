//! Sans-IO protocol cores for warren.
//!
//! A protocol core is a state machine for one connection. It performs no I/O, reads no clock,
//! spawns nothing and draws no global randomness: a driver (one per server model, in
//! `warren-models`) feeds it bytes and the current time, and it answers through an [`Output`]:
//! bytes to send, whether to half-close or close, and [`Action`]s it cannot perform itself
//! (reach the state shared by all connections, make a blocking call, log a line).
//!
//! ```text
//!            bytes, now, messages                 bytes, actions, next deadline
//!  driver ─────────────────────────▶ Session ─────────────────────────────────▶ driver
//!                                       │ Action::Hub(request)
//!                                       ▼
//!                                      Hub  (one per service: chat rooms, game counter)
//!                                       │ (session id, message) pairs, pushed to any session
//! ```
//!
//! The interface is in [`session`]: [`Service`] makes a [`Session`] per connection and one
//! [`Hub`] per server; [`Limits`] and [`Deadline`] give every core the same idle and read
//! timeouts. Each protocol lives in its own module and documents its wire format in
//! `docs/protocols.md`.

pub mod answer;
pub mod chat;
pub mod daytime;
pub mod deadline;
pub mod discard;
pub mod echo;
pub mod hub;
pub mod lines;
pub mod output;
pub mod pingpong;
pub mod session;
pub mod time;
pub mod timeserver;

pub use deadline::{Deadline, Limits};
pub use hub::{Hub, NoHub, Nothing, Wire};
pub use output::{Action, Level, Output};
pub use session::{ConnInfo, DatagramService, Service, Session, SessionId};
