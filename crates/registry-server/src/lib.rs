//! warren's directory server: the registry's state machine, a durable embedded store, the binary
//! protocol's server, health checks and the HTTP/JSON API. What clients and other stores share
//! (the model, the `Backend` trait, the wire protocol, the client) is `warren-registry`. See
//! `docs/registry.md`.
//!
//! - [`state`]: the sans-IO state machine every backend's semantics come from;
//! - [`embedded`]: the default backend, the state machine over a `redb` file, in a private
//!   data directory ([`datadir`]) with the registry's token key, its writes made durable by a
//!   write-ahead [`journal`];
//! - [`health`]: a backend wrapper that leaves out endpoints whose check fails;
//! - [`session`]: the binary protocol as a session, answers coming back out of order as jobs,
//!   a connection's watches waiting together in one [`feed`];
//! - [`server`]: that session served by a server model, in front of any backend;
//! - [`api`]: the HTTP/JSON API, for operators and scripts;
//! - [`metrics`]: the store counted and timed, and the API's `/metrics` page.

pub mod api;
pub mod datadir;
pub mod embedded;
pub mod feed;
pub mod health;
pub mod journal;
pub mod metrics;
pub mod server;
pub mod session;
pub mod state;
