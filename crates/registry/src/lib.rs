//! warren's directory server: names mapped to endpoints, soft-state leases, watches from a
//! revision, and a durable embedded store. See `docs/registry.md`.
//!
//! - [`model`]: names, endpoints, revisions, events, the error enum;
//! - [`state`]: the sans-IO state machine every backend's semantics come from;
//! - [`backend`]: the async `Backend` trait servers and clients program against;
//! - [`embedded`]: the default backend, the state machine over a `redb` file;
//! - [`wire`]: the binary protocol; [`server`] and [`client`] speak it.

pub mod api;
pub mod backend;
pub mod client;
pub mod embedded;
pub mod health;
pub mod model;
pub mod server;
pub mod state;
pub mod wire;

pub use model::*;
