//! Response-rate limiting over UDP, as BIND's RRL does it.
//!
//! A DNS answer can be twenty times the size of its query, and UDP lets anyone name any source:
//! without a limit the server is an amplifier aimed wherever an attacker likes. So the answers
//! to one source *prefix* (a /24 for IPv4, a /56 for IPv6: spoofed floods vary the low bits,
//! and one site's resolvers share a prefix) are limited to `responses_per_second`, with a
//! one-second burst. Over the limit, answers are dropped, except every `slip`th, which goes out
//! truncated: an empty answer with TC set, as small as the query, so that a real client behind
//! that prefix retries over TCP (which cannot be spoofed) and is answered, while the victim of a
//! spoofed flood receives no more bytes than were sent. A prefix that keeps flooding is charged
//! for what it was refused, down to `window` seconds' worth, so that it stays limited until its
//! flood has stopped for a while.
//!
//! Differences from BIND, for simplicity: one bucket per prefix (BIND keys on the prefix, the
//! query name and the kind of answer, so that one noisy name does not limit the others), and
//! every answer counts alike (BIND can rate errors and NXDOMAIN separately). TCP is never
//! limited here; its connections are capped instead.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use warren_models::udp::rate::{BucketShape, Buckets, Take};

use crate::encode::Reply;

/// The limits; `Default` is BIND's defaults with a rate suited to clients that query directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Answers a second per source prefix; 0 turns response-rate limiting off. Default 20.
    pub responses_per_second: u32,
    /// Every this many refused answers, one goes out truncated (TC=1) instead of being dropped;
    /// 0 drops them all, 1 truncates them all. Default 2 (BIND's).
    pub slip: u32,
    /// How long a flood is remembered: a prefix that went over the limit is charged for what
    /// it was refused, up to this many seconds of answers. Default 15 s (BIND's).
    pub window: Duration,
    /// Prefix length of an IPv4 source. Default 24 (BIND's).
    pub ipv4_prefix: u8,
    /// Prefix length of an IPv6 source. Default 56 (BIND's).
    pub ipv6_prefix: u8,
    /// Prefixes remembered at most; beyond, the oldest is forgotten. Default 20,000 (BIND's
    /// `max-table-size`).
    pub max_table_size: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            responses_per_second: 20,
            slip: 2,
            window: Duration::from_secs(15),
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            max_table_size: 20_000,
        }
    }
}

impl RateLimit {
    /// No limit at all.
    pub const OFF: RateLimit = RateLimit {
        responses_per_second: 0,
        slip: 2,
        window: Duration::from_secs(15),
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        max_table_size: 20_000,
    };

    /// The prefix `ip` is counted under.
    pub fn prefix(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(self.ipv4_prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

/// What to do with one answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Send,
    /// Send this truncated form instead.
    Slip(Vec<u8>),
    /// Send nothing.
    Drop,
}

/// The limiter of one UDP socket.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    buckets: Option<Buckets<IpAddr>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let buckets = (limit.responses_per_second > 0).then(|| {
            let rate = f64::from(limit.responses_per_second);
            let shape = BucketShape { rate, ceiling: rate, floor: -rate * limit.window.as_secs_f64() };
            Buckets::new(shape, limit.max_table_size)
        });
        Limiter { limit, buckets }
    }

    /// Whether `response`, for a query from `source` received at `now`, goes out.
    pub(crate) fn check(&mut self, source: IpAddr, response: &[u8], now: Instant) -> Verdict {
        let Some(buckets) = &mut self.buckets else { return Verdict::Send };
        match buckets.take(&self.limit.prefix(source), now) {
            Take::Allowed => Verdict::Send,
            Take::Refused { in_a_row } if self.limit.slip > 0 && in_a_row % self.limit.slip == 0 => {
                truncated(response).map_or(Verdict::Drop, Verdict::Slip)
            }
            Take::Refused { .. } => Verdict::Drop,
        }
    }
}

/// `response` with its records taken out and TC set: the header, the question and the OPT
/// record, which a client takes as "ask again over TCP".
fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(response).ok()?;
    let mut reply = Reply::new(message.metadata);
    reply.metadata.truncation = true;
    reply.query = message.queries.first().cloned();
    reply.edns = message.edns;
    Some(reply.encode(512))
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_counted_by_prefix() {
        let limit = RateLimit::default();
        assert_eq!(limit.prefix(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(limit.prefix(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(limit.prefix(ip("2001:db8:1:2345::1")), ip("2001:db8:1:2300::"));
        let wide = RateLimit { ipv4_prefix: 0, ipv6_prefix: 128, ..limit };
        assert_eq!(wide.prefix(ip("192.0.2.77")), ip("0.0.0.0"));
        assert_eq!(wide.prefix(ip("2001:db8::1")), ip("2001:db8::1"));
    }

    fn response() -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.message_type = MessageType::Response;
        message.metadata.op_code = OpCode::Query;
        message.add_query(Query::query(Name::from_ascii("web.warren.").unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    #[test]
    fn over_the_limit_every_slipth_answer_is_truncated() {
        let limit = RateLimit { responses_per_second: 3, slip: 2, ..RateLimit::default() };
        let mut limiter = Limiter::new(limit);
        let (now, answer) = (Instant::now(), response());
        let verdicts: Vec<Verdict> = (0..7).map(|_| limiter.check(ip("192.0.2.1"), &answer, now)).collect();
        assert_eq!(verdicts[..3], [Verdict::Send, Verdict::Send, Verdict::Send]);
        assert_eq!(verdicts[3], Verdict::Drop);
        let Verdict::Slip(slip) = &verdicts[4] else { panic!("{:?}", verdicts[4]) };
        let slip = Message::from_vec(slip).unwrap();
        assert!(slip.metadata.truncation && slip.answers.is_empty() && slip.queries.len() == 1);
        assert_eq!(verdicts[5], Verdict::Drop);
        assert!(matches!(verdicts[6], Verdict::Slip(_)));
        // Another /24 has its own bucket; the same /24 does not.
        assert_eq!(limiter.check(ip("192.0.3.1"), &answer, now), Verdict::Send);
        assert_ne!(limiter.check(ip("192.0.2.200"), &answer, now), Verdict::Send);
    }

    #[test]
    fn a_flood_stays_limited_for_its_window() {
        let limit =
            RateLimit { responses_per_second: 10, slip: 0, window: Duration::from_secs(5), ..RateLimit::default() };
        let mut limiter = Limiter::new(limit);
        let (t0, answer) = (Instant::now(), response());
        for _ in 0..1000 {
            limiter.check(ip("192.0.2.1"), &answer, t0);
        }
        // 50 answers of debt: after 5 s the balance is back at zero, one credit later it answers.
        assert_eq!(limiter.check(ip("192.0.2.1"), &answer, t0 + Duration::from_millis(4900)), Verdict::Drop);
        let mut limiter = Limiter::new(limit);
        for _ in 0..1000 {
            limiter.check(ip("192.0.2.1"), &answer, t0);
        }
        assert_eq!(limiter.check(ip("192.0.2.1"), &answer, t0 + Duration::from_millis(5200)), Verdict::Send);
    }

    #[test]
    fn off_sends_everything() {
        let mut limiter = Limiter::new(RateLimit::OFF);
        let (now, answer) = (Instant::now(), response());
        assert!((0..1000).all(|_| limiter.check(ip("192.0.2.1"), &answer, now) == Verdict::Send));
    }
}
