//! warren's stateful file server: upload, download, list, stat and delete under a root, with
//! client caches kept coherent by leases and callbacks that survive a crash, and uploads that
//! can be cancelled out of band two ways (a control endpoint, TCP urgent data).
//!
//! - [`wire`]: the frames, byte by byte (docs/files.md).
//! - [`path`]: the lexical wall; [`disk`]: the store that no symlink escapes and whose writes
//!   are durable (complete or absent after kill -9); [`store`]: the trait between them and the
//!   session, with an in-memory store for tests.
//! - [`session`]: [`FileService`] and its sans-IO [`FileSession`] (no socket, no clock).
//! - [`auth`]: credentials and their rights, client identities and their keys; [`quota`]:
//!   upload bytes in flight per client.
//! - [`leases`]: the [`LeaseHub`], the lease and callback table shared by every connection,
//!   recovered after a crash from its [`journal`].
//! - [`cancel`]: uploads by id and the control endpoint's protocol.
//! - [`client`] and [`cache`]: a blocking client and its lease-aware cache.
//! - [`net`]: the socket options that let urgent data through promptly (server receive
//!   buffer, client unsent limit).

pub mod auth;
pub mod cache;
pub mod cancel;
pub mod client;
pub mod disk;
pub mod journal;
pub mod leases;
pub mod net;
pub mod path;
pub mod quota;
pub mod session;
pub mod store;
pub mod wire;

pub use auth::Access;
pub use cache::Cache;
pub use cancel::{ControlService, Uploads, raise_priority};
pub use client::{ClientError, Connection, Source, fetch};
pub use disk::DiskStore;
pub use journal::{FileJournal, Journal, MemJournal, Record};
pub use leases::{FileMessage, FileRequest, LeaseHub};
pub use path::FilePath;
pub use session::{FileLimits, FileService, FileSession};
pub use store::{MemStore, Store};
pub use wire::{Reply, Request};
