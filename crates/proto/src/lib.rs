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
//! Driving a core by hand, as every driver does (here echo, with a virtual clock):
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use warren_proto::echo::Echo;
//! use warren_proto::{ConnInfo, Limits, Output, Service, Session, SessionId};
//!
//! let echo = Echo { limits: Limits { idle_timeout: Duration::from_secs(5), ..Limits::default() } };
//! let t0 = Instant::now();
//! let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::now(), seed: 0 };
//! let mut session = echo.new_session(&info, t0);
//! let mut out = Output::new();
//! session.handle_open(t0, &mut out);
//! session.handle_input(t0, b"hello", &mut out);
//! assert_eq!(out.pending(), b"hello"); // the driver sends these bytes...
//! out.consume(5); // ...and says how many went out
//! assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(5)));
//! session.handle_timeout(t0 + Duration::from_secs(5), &mut out);
//! assert!(out.is_closed()); // idle for 5 s: the driver closes the connection
//! ```
//!
//! The interface is in [`session`]: [`Service`] makes a [`Session`] per connection and one
//! [`Hub`] per server; [`Limits`] and [`Deadline`] give every core the same idle and read
//! timeouts. Each protocol lives in its own module and documents its wire format in
//! `docs/protocols.md`.

pub mod answer;
pub mod chargen;
pub mod chat;
pub mod daytime;
pub mod deadline;
pub mod discard;
pub mod echo;
pub mod effect;
pub mod frame;
pub mod handoff;
pub mod http;
pub mod http_proxy;
pub mod hub;
pub mod lines;
pub mod metrics;
pub mod oob;
pub mod output;
pub mod pick;
pub mod pingpong;
pub mod proxy_header;
pub mod relay;
pub mod session;
pub mod time;
pub mod timeserver;

pub use deadline::{Deadline, Limits};
pub use effect::{HandOffTarget, Job, StreamId, Token};
pub use hub::{Hub, HubOutput, NoHub, Nothing, Wire};
pub use output::{Action, FileSlice, Level, Outbox, Output, Transmit};
pub use session::{ConnInfo, DatagramService, Out, Service, Session, SessionId, Urgent};
