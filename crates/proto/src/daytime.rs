//! Daytime (RFC 867): on connect (or per datagram) the server sends the date and time as one
//! ASCII line and closes. The format is the RFC's first example, in UTC:
//! `Sunday, November 29, 2026 15:16:34-UTC\r\n`.

use std::time::{Instant, SystemTime};

use time::OffsetDateTime;
use time::macros::format_description;

use crate::answer::AnswerSession;
use crate::{ConnInfo, DatagramService, NoHub, Service};

/// The daytime service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Daytime;

/// Format `wall` as a daytime line, CRLF included.
pub fn format_daytime(wall: SystemTime) -> String {
    let format =
        format_description!("[weekday], [month repr:long] [day padding:none], [year] [hour]:[minute]:[second]-UTC\r\n");
    OffsetDateTime::from(wall).format(format).unwrap_or_else(|_| "unrepresentable time\r\n".into())
}

impl Service for Daytime {
    type Hub = NoHub;
    type Session = AnswerSession;

    fn name(&self) -> &'static str {
        "daytime"
    }

    fn new_session(&self, info: &ConnInfo, _: Instant) -> AnswerSession {
        AnswerSession::new(format_daytime(info.wall))
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

impl DatagramService for Daytime {
    fn name(&self) -> &'static str {
        "daytime"
    }

    fn handle_datagram(&self, wall: SystemTime, _: &[u8], reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(format_daytime(wall).as_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc_867_line() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_965_394);
        assert_eq!(format_daytime(wall), "Sunday, November 29, 2026 15:16:34-UTC\r\n");
    }
}
