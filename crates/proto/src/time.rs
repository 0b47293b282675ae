//! Time (RFC 868): on connect (or per datagram) the server sends the time as four bytes,
//! big-endian, counting seconds since 1900-01-01T00:00:00Z, and closes.
//!
//! The count is taken modulo 2^32: it wraps on 2036-02-07T06:28:16Z, as the RFC's 32 bits do.

use std::time::{Instant, SystemTime};

use crate::answer::AnswerSession;
use crate::{ConnInfo, DatagramService, NoHub, Service};

/// Seconds from 1900-01-01 to 1970-01-01.
pub const EPOCH_1900_TO_1970: u64 = 2_208_988_800;

/// The time service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Time;

/// The RFC 868 encoding of `wall`.
pub fn encode_time(wall: SystemTime) -> [u8; 4] {
    let unix = wall.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    ((unix + EPOCH_1900_TO_1970) as u32).to_be_bytes()
}

/// Decode four RFC 868 bytes into seconds since the Unix epoch, assuming the value was sent
/// before the 2036 wrap.
pub fn decode_time(bytes: [u8; 4]) -> i64 {
    i64::from(u32::from_be_bytes(bytes)) - EPOCH_1900_TO_1970 as i64
}

impl Service for Time {
    type Hub = NoHub;
    type Session = AnswerSession;

    fn name(&self) -> &'static str {
        "time"
    }

    fn new_session(&self, info: &ConnInfo, _: Instant) -> AnswerSession {
        AnswerSession::new(encode_time(info.wall))
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

impl DatagramService for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn handle_datagram(&self, wall: SystemTime, _: &[u8], reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(&encode_time(wall));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc_868_examples() {
        // The RFC: 2,208,988,800 is 1970-01-01; 2,398,291,200 is 1976-01-01.
        assert_eq!(encode_time(SystemTime::UNIX_EPOCH), 2_208_988_800u32.to_be_bytes());
        let y1976 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_398_291_200 - EPOCH_1900_TO_1970);
        assert_eq!(encode_time(y1976), 2_398_291_200u32.to_be_bytes());
        assert_eq!(decode_time(encode_time(y1976)), 2_398_291_200 - EPOCH_1900_TO_1970 as i64);
    }
}
