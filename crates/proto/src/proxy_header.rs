//! The PROXY protocol header (HAProxy's `doc/proxy-protocol.txt`), which a relay writes first on
//! a backend connection so that the backend learns the client's address and port, which it
//! would otherwise see as the switch's. Version 1 is a text line, version 2 a binary block with
//! a fixed signature; both are understood by HAProxy (`accept-proxy`), nginx (`proxy_protocol`),
//! Varnish, Postfix and others.
//!
//! Only the sending side lives here: the header describes a TCP connection, over IPv4 or IPv6.
//! When the two addresses are of different families the IPv4 one is written IPv4-mapped (the
//! specification wants one family); when the client's address is unknown the header says so
//! (`UNKNOWN`, or version 2's `LOCAL` command), and the receiver uses the connection's own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Which version of the header a backend expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The text line, `PROXY TCP4 SRC DST SPORT DPORT\r\n` (at most 107 bytes).
    V1,
    /// The binary header: a 12-byte signature, version and command, family, length, addresses.
    V2,
}

impl FromStr for ProxyVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(ProxyVersion::V1),
            "v2" | "2" => Ok(ProxyVersion::V2),
            _ => Err(format!("unknown PROXY protocol version {s:?} (want v1 or v2)")),
        }
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

/// Version 2's signature, the first 12 bytes of every header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `source` to `destination`; `None` for an unknown source.
pub fn encode(version: ProxyVersion, source: Option<SocketAddr>, destination: SocketAddr) -> Vec<u8> {
    let pair = source.map(|source| same_family(source, destination));
    match version {
        ProxyVersion::V1 => v1(pair),
        ProxyVersion::V2 => v2(pair),
    }
}

/// Both addresses in one family: IPv4 if both are, else both IPv6 (IPv4-mapped where needed).
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => (source, destination),
        _ => (v6(source), v6(destination)),
    }
}

fn v1(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let Some((src, dst)) = pair else { return b"PROXY UNKNOWN\r\n".to_vec() };
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port()).into_bytes()
}

fn v2(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    let Some((src, dst)) = pair else {
        // Version 2, LOCAL; family UNSPEC, no address block.
        header.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return header;
    };
    let (family, addresses): (u8, Vec<u8>) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, [s.octets(), d.octets()].concat()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (0x21, [s.octets(), d.octets()].concat()),
        _ => unreachable!("same_family gives one family"),
    };
    // Version 2, PROXY; TCP over IPv4 (0x11) or IPv6 (0x21); then the length of what follows.
    header.extend_from_slice(&[0x21, family]);
    let length = (addresses.len() + 4) as u16;
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&addresses);
    header.extend_from_slice(&src.port().to_be_bytes());
    header.extend_from_slice(&dst.port().to_be_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1_is_the_specifications_text_line() {
        let h = encode(ProxyVersion::V1, Some(addr("192.168.0.1:56324")), addr("192.168.0.11:443"));
        assert_eq!(h, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        let h = encode(ProxyVersion::V1, Some(addr("[::1]:1000")), addr("[::2]:80"));
        assert_eq!(h, b"PROXY TCP6 ::1 ::2 1000 80\r\n");
        assert_eq!(encode(ProxyVersion::V1, None, addr("10.0.0.1:80")), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn version_1_stays_within_its_107_bytes() {
        let long = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        assert!(encode(ProxyVersion::V1, Some(addr(long)), addr(long)).len() <= 107);
    }

    #[test]
    fn version_2_lays_out_signature_command_family_length_and_addresses() {
        let h = encode(ProxyVersion::V2, Some(addr("127.0.0.5:40000")), addr("127.0.0.1:8080"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 5, 127, 0, 0, 1]);
        want.extend_from_slice(&40000u16.to_be_bytes());
        want.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(h, want);

        let h = encode(ProxyVersion::V2, Some(addr("[::1]:1")), addr("[::2]:2"));
        assert_eq!((h[13], u16::from_be_bytes([h[14], h[15]]), h.len()), (0x21, 36, 16 + 36));
        let h = encode(ProxyVersion::V2, None, addr("127.0.0.1:80"));
        assert_eq!(&h[12..], &[0x20, 0x00, 0, 0]);
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let h = encode(ProxyVersion::V1, Some(addr("127.0.0.5:1")), addr("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:127.0.0.5 ::1 1 2\r\n");
    }

    #[test]
    fn versions_parse_from_their_names() {
        assert_eq!("v2".parse::<ProxyVersion>(), Ok(ProxyVersion::V2));
        assert!("v3".parse::<ProxyVersion>().unwrap_err().contains("want v1 or v2"));
    }
}
