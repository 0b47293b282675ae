//! Remote objects on the wire: an interface is a Rust trait marked [`interface`], which
//! generates the client stub and the server skeleton (no IDL, no protoc).
//!
//! - [`wire`]: the binary framing, calls multiplexed by id (docs/rpc.md).
//! - [`codec`]: postcard and JSON for the same values.
//! - [`interface`](mod@interface): what an interface declares, the skeleton's [`Dispatch`], a
//!   call's [`Context`], remote references ([`ObjectRef`]).
//! - [`client`]: the multiplexed [`Connection`], [`RawCall`] and the stub's [`Target`].
//! - [`error`]: platform errors with stable codes, and each method's own typed error.
//!
//! ```
//! #[warren_rpc::interface(name = "Hello", version = 1)]
//! pub trait Hello: Send + Sync + 'static {
//!     #[rpc(name = "sayHello", idempotent)]
//!     fn say_hello(&self) -> String;
//! }
//! // Generated: `HELLO` (the interface), `HelloSkeleton<T: Hello>` (a `Dispatch`) and
//! // `HelloClient` (the stub: `HelloClient::new(target).say_hello().await`).
//! ```

mod block;
pub mod client;
pub mod codec;
pub mod error;
pub mod interface;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use block::block_on;
pub use client::{Caller, Connection, ConnectionConfig, RawCall, Target};
pub use codec::Codec;
pub use error::{CallError, Code, Failure, Never, RpcError};
pub use interface::{Context, Dispatch, Exporter, Interface, Method, ObjectRef};
pub use warren_rpc_macros::interface;
