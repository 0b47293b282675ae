//! warren's object server: objects added and removed at run time, each with an id and a name,
//! run under CORBA's activation policies ([`policy`]), transient or persistent in a store
//! ([`store`]: SQLite by default, [`postgres`] to share them), served on the spine in the binary protocol ([`session`])
//! and in JSON over HTTP ([`http`]). docs/objects.md tells how to run it; docs/rpc.md gives
//! both wire formats byte by byte.
//!
//! - [`table`]: the hosted objects by name, their executors and servants, exports.
//! - [`class`]: what objects are instances of; [`examples`]: the course's classes.
//! - [`admin`]: the server's own object, which adds, removes and lists the others.
//! - [`metrics`]: each object's calls, errors, latency and activations, as a Prometheus page.

pub mod admin;
pub mod class;
pub mod examples;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod postgres;
pub mod session;
pub mod store;
pub mod table;

pub use admin::{ADMIN_OBJECT, Admin, ObjectAdminClient};
pub use class::{Class, ClassInfo, Classes, Incarnation};
pub use http::HttpObjectService;
pub use policy::Policy;
pub use postgres::PostgresStore;
pub use session::{ObjectLimits, ObjectService};
pub use store::{Record, SqliteStore, Store, StoreError};
pub use table::{Lifespan, ObjectInfo, ObjectSpec, Objects};
