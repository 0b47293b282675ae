//! Client middleware for remote objects, as tower layers: each usable alone, each a
//! `Service<RawCall>` (or a layer of one) that a stub's [`Caller`](warren_rpc::Caller) can
//! box. `docs/rpc-layers.md` gives every default and where it comes from.
//!
//! - [`location`]: location transparency, names resolved through the registry with a
//!   watch-driven cache ([`Location`]);
//! - [`replicated`]: replication transparency, round robin, hedged idempotent calls under a
//!   budget, failover ([`Replicated`]);
//! - failure transparency: [`retry`] (Finagle's retry budget, [`RetryLayer`]), [`outlier`]
//!   (Envoy's consecutive-failure ejection, [`Outliers`]), [`circuit`] (failure accrual,
//!   [`CircuitBreakerLayer`]), [`stale`] (cached answers marked stale, [`ServeStaleLayer`]);
//! - [`replicas`] and [`pool`]: where replicas are, and the connections to them.
//!
//! A full stack, outermost first:
//!
//! ```no_run
//! # async fn stack(registry: warren_registry::client::Client) {
//! use std::sync::Arc;
//! use tower::ServiceBuilder;
//! use warren_rpc::{Caller, Target};
//! use warren_rpc_layers::*;
//!
//! let replicas = Replicated::new(Location::new(registry))
//!     .hedging(Hedging::default())
//!     .failover(RetryBudget::default())
//!     .outliers(Arc::new(Outliers::new(Ejection::default())));
//! let caller = ServiceBuilder::new()
//!     .layer(ServeStaleLayer::new(StalePolicy::default()))
//!     .layer(CircuitBreakerLayer::new(Breaker::default()))
//!     .service(replicas);
//! let target = Target::new(Caller::new(caller), "hello");
//! // HelloClient::new(target).say_hello().await, or, to learn whether it was stale:
//! // let (answer, stale) = stale::observe(hello.say_hello()).await;
//! # }
//! ```

pub mod circuit;
pub mod location;
pub mod outlier;
pub mod pool;
pub mod replicas;
pub mod replicated;
pub mod retry;
pub mod stale;

pub use circuit::{Breaker, Circuit, CircuitBreaker, CircuitBreakerLayer};
pub use location::Location;
pub use outlier::{Ejection, Outliers};
pub use pool::Pool;
pub use replicas::{Fixed, Replicas};
pub use replicated::{Counts, Hedging, LEARN_AFTER, Replicated};
pub use retry::{RetryBudget, RetryLayer, RetryPolicy, may_retry};
pub use stale::{ServeStale, ServeStaleLayer, Stale, StaleCache, StalePolicy, observe};
