//! What the answer tests and the prepared-answer tests both build on: addresses numbered from
//! 10.0.0.0 and 2001:db8::, queries, and the addresses a response carries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// The `i`th IPv4 address of the tests' directories.
pub(crate) fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// The `i`th IPv6 address of the tests' directories.
pub(crate) fn v6(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
}

/// A query for `name` and `qtype`, id 0x4242, recursion desired (as stub resolvers send).
pub(crate) fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// The A and AAAA records of `response`'s answer section, in order.
pub(crate) fn addresses(response: &Message) -> Vec<IpAddr> {
    response
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            other => panic!("not an address: {other:?}"),
        })
        .collect()
}
