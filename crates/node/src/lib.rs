//! The node: one process that listens on every configured port and hosts each service by its
//! kind, the way inetd and xinetd do, with warren's protocols built in.
//!
//! ```text
//!  warren.toml ─┐                        ┌─ exec nowait: accept, spawn the program per connection
//!  xinetd.conf ─┴─▶ Config ─▶ Node loop ─┼─ exec wait:   hand the listener over until the child exits
//!   (attrs.rs checks both)    (mio)      ├─ redirect:    relay each connection to another address
//!                                        └─ builtin:     warren_models::serve_until on its own thread
//! ```
//!
//! [`config`] holds the types, [`attrs`] the checks both formats share, [`toml_config`] and
//! [`xinetd`] the two formats; [`node`] is the loop, [`exec`] the per-connection admission and
//! [`spawn`] and [`sandbox`] the child's start.

pub mod access;
pub mod attrs;
pub mod builtin;
pub mod config;
pub mod exec;
pub mod gate;
mod load;
pub mod node;
pub mod sandbox;
pub mod site;
pub mod spawn;
pub mod status;
pub mod toml_config;
pub mod xinetd;

pub use config::Config;
pub use load::LoadError;
pub use node::{Inherited, NodeHandle, start, start_with};
pub use status::{Hooks, NoHooks, Status};
