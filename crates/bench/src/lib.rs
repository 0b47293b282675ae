//! The benches behind `warren bench`: each measures warren on this machine, in one run, against
//! the alternatives it replaces, and writes a table (and for some a chart) of what it saw.
//!
//! - [`models`]: the eight server models side by side (throughput, idle connections, memory,
//!   the blocking call);
//! - [`http`]: warren's HTTP server under each model against nginx, with wrk;
//! - [`oob`]: cancelling a huge upload out of band, through the control endpoint and with TCP
//!   urgent data;
//! - [`superd`]: connections per second when each starts a program, under warren's node, xinetd
//!   and tcpserver;
//! - [`registry`]: the registry's embedded store against etcd, and its DNS under dnsperf
//!   ([`run_dnsperf`]);
//! - [`dns`]: the registry's DNS beside Knot DNS and BIND 9 under the same dnsperf load, per
//!   server CPU-second;
//! - [`rpc`]: remote objects, unary calls against tonic (gRPC), hedging over three replicas one
//!   of which stalls, failover when one dies;
//! - [`switch`]: `warren switch` against HAProxy and against no switch, relaying, proxying HTTP
//!   and handing connections off;
//! - [`migrate`]: strong mobility between two `warren up` nodes: hops of 64 KiB to 64 MiB of
//!   state, snapshot sizes, and the steady-state price of safe points;
//! - [`soak`]: mixed clients against one `warren up` for minutes, its memory, descriptors and
//!   threads sampled until the end, to show they stay flat.
//!
//! Each bench prints its table and writes it with its chart as `NAME.md` and `NAME.svg` in its
//! `--out` directory (`chart.rs` draws every chart); [`report`] gathers the latest of each into one
//! HTML page. Long work shows progress through [`progress`], on a terminal only.
//!
//! Each entry point takes its clap [`Args`](clap::Args) struct, which the binary mounts as
//! `warren bench <name>`. The servers under test are children of the running executable
//! (`warren serve`, `warren files serve`, `warren up`), so these functions are meant to run
//! inside the `warren` binary and nowhere else. A bench installs the Debian packages it needs
//! (nginx, wrk, etcd, xinetd, ucspi-tcp, gcc, dnsperf, knot, bind9) with apt-get when they are missing.

mod chart;
mod dns;
mod dnsperf;
mod hist;
mod host;
mod http;
mod httpreport;
mod idle;
mod load;
mod migrate;
mod models;
mod nginx;
mod oob;
mod page;
mod probe;
pub mod progress;
mod redraw;
mod registry;
mod report;
mod results;
mod rpc;
mod scratch;
mod server;
mod soak;
mod superd;
mod switch;
mod wrk;

use std::path::PathBuf;

use anyhow::Context;

pub use self::dns::{DnsArgs, dns};
pub use self::dnsperf::{DnsperfError, DnsperfReport, run_dnsperf};
pub use self::http::{HttpArgs, http};
pub use self::migrate::{MigrateArgs, migrate};
pub use self::models::{ModelsArgs, models};
pub use self::oob::{OobArgs, oob};
pub use self::page::{ReportArgs, report};
pub use self::redraw::{ChartArgs, chart as redraw_chart};
pub use self::registry::{RegistryArgs, registry};
pub use self::rpc::{ReplicaArgs, RpcArgs, TonicHelloArgs, rpc, serve_replica, serve_tonic_hello};
pub use self::soak::{SoakArgs, soak};
pub use self::superd::{SuperdArgs, superd};
pub use self::switch::{SwitchArgs, switch};

/// The `warren` binary the benches start their servers from: the running executable, since a
/// bench runs inside `warren bench`.
fn warren_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the warren binary")
}
