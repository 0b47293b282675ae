//! What warren's tests and benches run beside the code they exercise: a throwaway one-node etcd
//! ([`LocalEtcd`]) or three-member cluster ([`EtcdCluster`]), a throwaway PostgreSQL
//! ([`LocalPostgres`]), loopback ports for programs that must be told theirs, network namespaces
//! of a test's own ([`netns`]), `/metrics` pages parsed by a real parser ([`metrics`]), and virtual networks of several namespaces joined by bridges
//! ([`VirtualNet`]). Not published, and never a dependency of what warren serves.

mod etcd;
pub mod etcd_cluster;
pub mod metrics;
pub mod netns;
pub mod postgres;
pub mod vnet;

use std::net::TcpListener;

pub use etcd::LocalEtcd;
pub use etcd_cluster::{EtcdCluster, RaftTiming};
pub use postgres::LocalPostgres;
pub use vnet::VirtualNet;

/// A port free right now on 127.0.0.1 (bound to port 0 and released: for programs such as etcd,
/// nginx and xinetd, which take ports by number only).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
