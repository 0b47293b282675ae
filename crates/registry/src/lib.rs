//! warren's directory: names mapped to endpoints, soft-state leases, watches from a revision.
//! This crate is what a client and any store share; the server and the embedded store are in
//! `warren-registry-server`, the etcd store in `warren-registry-etcd`. See `docs/registry.md`.
//!
//! - [`model`]: names (case-insensitive, case-preserving), endpoints, revisions, events, tokens, the error enum;
//! - [`backend`]: the async `Backend` trait every store implements and servers program against;
//! - [`wire`]: the binary protocol; [`client`] speaks it (and keeps a watch-invalidated cache).

pub mod backend;
pub mod client;
pub mod model;
mod name;
pub mod wire;

pub use model::*;
