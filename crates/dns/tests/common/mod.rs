//! A server on loopback with a fixed directory, for the integration tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use warren_dns::{Config, Server, Target};

/// `web`: 10 IPv4 addresses; `dual`: two of each family; `big`: 100 IPv4 addresses, more than 1232
/// bytes hold; `down`: bound without healthy endpoints. The addresses are data only: nothing is
/// ever sent to them.
pub fn directory() -> HashMap<String, Vec<Target>> {
    let target = |i: usize, addr: IpAddr| Target { addr, port: 9000 + i as u16, weight: 10 };
    let v4 = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 10 + (i / 250) as u8, 1 + (i % 250) as u8));
    let v6 = |i: usize| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 + i as u16));
    let mut names = HashMap::new();
    names.insert("web".to_owned(), (0..10).map(|i| target(i, v4(i))).collect());
    names.insert("dual".to_owned(), vec![target(0, v4(0)), target(1, v6(0)), target(2, v4(1)), target(3, v6(1))]);
    names.insert("big".to_owned(), (0..100).map(|i| target(i, v4(i))).collect());
    names.insert("down".to_owned(), vec![]);
    names
}

pub fn web_addresses() -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = directory()["web"].iter().map(|t| t.addr).collect();
    addrs.sort();
    addrs
}

pub fn start(config: Config) -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap(), config, Arc::new(directory())).expect("a DNS server on loopback")
}
