//! The DNS server over a fixed directory, to try with `dig` before a registry is running:
//!
//! ```sh
//! cargo run --release -p warren-dns --example serve -- 127.0.0.1:5300
//! dig @127.0.0.1 -p 5300 web.warren          # three A records, rotated from query to query
//! dig @127.0.0.1 -p 5300 dual.warren SRV     # ports, weights, targets with their addresses
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use warren_dns::{Config, Server, Target};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:5300").parse()?;
    let target = |addr: &str, port, weight| Target { addr: addr.parse().unwrap(), port, weight };
    let directory = HashMap::from([
        (
            "web".to_owned(),
            vec![target("127.0.0.11", 8080, 10), target("127.0.0.12", 8080, 10), target("127.0.0.13", 8080, 5)],
        ),
        ("dual".to_owned(), vec![target("127.0.0.21", 7000, 1), target("::1", 7001, 1)]),
        ("down".to_owned(), vec![]),
    ]);
    let server = Server::bind(addr, Config::default(), Arc::new(directory))?;
    println!(
        "answering for web.warren., dual.warren. and down.warren. on {} (UDP and TCP); Ctrl-C stops",
        server.local_addr()
    );
    // The server runs on its own thread; this one has nothing left to do but wait.
    loop {
        std::thread::park();
    }
}
