//! What a query name stands for inside the zone: the apex, an address name (`<hex>.addr.<zone>`,
//! the SRV targets), or a registry name.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::config::Zone;

/// A name inside the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// The zone itself: its SOA.
    Apex,
    /// `addr.<zone>`: exists only as the parent of the address names.
    AddrParent,
    /// `<hex>.addr.<zone>`: 8 hex digits for an IPv4 address, 32 for IPv6, as Consul names SRV
    /// targets. Answered from the name alone, so an SRV target resolves even when the additional
    /// section was dropped on the way.
    Address(IpAddr),
    /// Anything else: a registry name, lowercased, labels joined by dots.
    Registry(String),
    /// In the zone but nothing can be there: a malformed address name, or a label that no
    /// registry name can hold (not printable ASCII, or holding a dot).
    Missing,
}

/// What `qname` is in `zone`, or `None` when it is outside.
pub(crate) fn classify(qname: &Name, zone: &Zone) -> Option<Node> {
    if !zone.name().zone_of(qname) {
        return None;
    }
    // `iter().len()` counts every label; `num_labels` would not count a leading `*`.
    let own_labels = qname.iter().len() - zone.name().iter().len();
    let mut labels = qname.iter().take(own_labels);
    if own_labels == 0 {
        return Some(Node::Apex);
    }
    if zone.addr().zone_of(qname) {
        return Some(match own_labels {
            1 => Node::AddrParent,
            2 => labels.next().and_then(parse_address).map_or(Node::Missing, Node::Address),
            _ => Node::Missing,
        });
    }
    let mut name = String::with_capacity(qname.len());
    for (i, label) in labels.enumerate() {
        if !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
            return Some(Node::Missing);
        }
        if i > 0 {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(Node::Registry(name))
}

/// `<hex>.addr.<zone>` for `addr`: the SRV target name of an endpoint.
pub(crate) fn address_name(addr: IpAddr, zone: &Zone) -> Name {
    let mut hex = String::with_capacity(32);
    let octets: &[u8] = match &addr {
        IpAddr::V4(v4) => &v4.octets(),
        IpAddr::V6(v6) => &v6.octets(),
    };
    for octet in octets {
        write!(hex, "{octet:02x}").expect("writing to a String cannot fail");
    }
    zone.addr().prepend_label(hex.as_str()).expect("a 32-byte label under a valid zone is a valid name")
}

fn parse_address(label: &[u8]) -> Option<IpAddr> {
    fn octets<const N: usize>(label: &[u8]) -> Option<[u8; N]> {
        let mut octets = [0; N];
        for (octet, pair) in octets.iter_mut().zip(label.chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).ok()?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *octet = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(octets)
    }
    match label.len() {
        8 => octets::<4>(label).map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        32 => octets::<16>(label).map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_str(name: &str) -> Option<Node> {
        classify(&Name::from_ascii(name).unwrap(), &Zone::default())
    }

    /// A name of raw labels, as the wire can carry and `from_ascii` refuses.
    fn classify_raw(labels: &[&[u8]]) -> Option<Node> {
        let mut name = Name::from_labels(labels.iter().copied()).unwrap();
        name.set_fqdn(true);
        classify(&name, &Zone::default())
    }

    #[test]
    fn names_in_the_zone() {
        assert_eq!(classify_str("warren."), Some(Node::Apex));
        assert_eq!(classify_str("WARREN."), Some(Node::Apex));
        assert_eq!(classify_str("Web.Warren."), Some(Node::Registry("web".into())));
        assert_eq!(classify_str("db.EU.warren."), Some(Node::Registry("db.eu".into())));
        assert_eq!(classify_str("_http._tcp.web.warren."), Some(Node::Registry("_http._tcp.web".into())));
        assert_eq!(classify_raw(&[b"a b", b"warren"]), Some(Node::Missing));
        assert_eq!(classify_raw(&[b"a.b", b"warren"]), Some(Node::Missing));
        assert_eq!(classify_raw(&[b"caf\xc3\xa9", b"warren"]), Some(Node::Missing));
        assert_eq!(classify_raw(&[b"Web", b"WARREN"]), Some(Node::Registry("web".into())));
    }

    #[test]
    fn names_outside_the_zone() {
        assert_eq!(classify_str("example.com."), None);
        assert_eq!(classify_str("warren.com."), None);
        assert_eq!(classify_str("."), None);
    }

    #[test]
    fn address_names_round_trip() {
        let zone = Zone::default();
        for addr in ["10.0.0.1", "255.1.0.254", "::1", "2001:db8::ff:1"] {
            let addr: IpAddr = addr.parse().unwrap();
            let name = address_name(addr, &zone);
            assert_eq!(classify(&name, &zone), Some(Node::Address(addr)), "{name}");
        }
        assert_eq!(address_name("10.0.0.1".parse().unwrap(), &zone).to_string(), "0a000001.addr.warren.");
        assert_eq!(classify_str("0A00000F.ADDR.warren."), Some(Node::Address("10.0.0.15".parse().unwrap())));
        assert_eq!(classify_str("addr.warren."), Some(Node::AddrParent));
        for missing in ["0a00001.addr.warren.", "0a00000g.addr.warren.", "x.0a000001.addr.warren."] {
            assert_eq!(classify_str(missing), Some(Node::Missing), "{missing}");
        }
        assert_eq!(classify_raw(&[b"+a000001", b"addr", b"warren"]), Some(Node::Missing));
    }
}
