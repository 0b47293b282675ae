//! The course's TimeServer: on connect it logs the peer, sends the date, then makes a blocking
//! call lasting `delay` ("to reinforce the single-threaded nature"), then closes.
//!
//! The date goes out in one of the course's three wire forms ([`TimeFormat`]): a serialized
//! `java.util.Date` (the Java TimeServer and its threaded, Improved and Executor variants), C's
//! `ctime` line (`timeserver.c`), or warren's daytime line.
//!
//! The blocking call is a [`Job`](crate::Job) the driver performs, so the same core shows how
//! each server model copes with one: `iterative` stalls every other connection, the
//! thread-based models stall one thread, and `event`, `green` and `hybrid` stall everything
//! unless they have helper threads to run it on.

pub mod java_date;

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::answer::AnswerSession;
use crate::daytime::format_daytime;
use crate::{ConnInfo, Level, NoHub, Nothing, Output, Service, Session, Token};

/// How far a time zone is from UTC at a given instant (it changes with daylight saving time).
pub type ZoneOffset = fn(SystemTime) -> UtcOffset;

/// UTC: the zone of a server that was told no other.
pub fn utc(_: SystemTime) -> UtcOffset {
    UtcOffset::UTC
}

/// The wire form of the date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// A serialized `java.util.Date` ([`java_date`]), as the course's Java TimeServer writes it.
    Java,
    /// `ctime(3)` as `"%.24s\r\n"` in the server's zone, as the course's C `timeserver.c` writes it.
    Ctime,
    /// The daytime line (RFC 867, UTC).
    #[default]
    Text,
}

impl FromStr for TimeFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "java" => Ok(Self::Java),
            "ctime" => Ok(Self::Ctime),
            "text" => Ok(Self::Text),
            other => Err(format!("unknown time format {other:?}: want java, ctime or text")),
        }
    }
}

/// The course's TimeServer.
#[derive(Clone, Debug)]
pub struct TimeServer {
    /// How long the blocking call after each answer lasts. Default 4 seconds, as in the course.
    pub delay: Duration,
    /// The date's wire form [default: text; `warren timeserver` sends java].
    pub format: TimeFormat,
    /// The server's time zone, for `ctime` (the others carry no zone).
    pub zone: ZoneOffset,
}

impl Default for TimeServer {
    fn default() -> Self {
        Self { delay: Duration::from_secs(4), format: TimeFormat::default(), zone: utc }
    }
}

impl TimeServer {
    /// The bytes that tell a client the time `wall`.
    pub fn answer(&self, wall: SystemTime) -> Vec<u8> {
        match self.format {
            TimeFormat::Java => java_date::encode_java_date(wall),
            TimeFormat::Ctime => format!("{}\r\n", format_ctime(wall, (self.zone)(wall))).into_bytes(),
            TimeFormat::Text => format_daytime(wall).into_bytes(),
        }
    }
}

/// `ctime(3)` without its newline: `Mon Dec  7 04:01:23 2026` (the day padded with a space).
pub fn format_ctime(wall: SystemTime, offset: UtcOffset) -> String {
    let format = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    OffsetDateTime::from(wall).to_offset(offset).format(format).unwrap_or_else(|_| "unrepresentable time".into())
}

/// `java.util.Date.toString()`: `Mon Dec 07 04:01:23 UTC 2026`, in the zone `offset` whose
/// abbreviation is `zone`.
pub fn format_java_date(wall: SystemTime, offset: UtcOffset, zone: &str) -> String {
    let local = OffsetDateTime::from(wall).to_offset(offset);
    let clock = format_description!("[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second]");
    match local.format(clock) {
        Ok(clock) => format!("{clock} {zone} {}", local.year()),
        Err(_) => "unrepresentable time".into(),
    }
}

impl Service for TimeServer {
    type Hub = NoHub;
    type Session = TimeServerSession;

    fn name(&self) -> &'static str {
        "timeserver"
    }

    fn new_session(&self, info: &ConnInfo, _: Instant) -> TimeServerSession {
        let peer = match info.peer {
            Some(peer) => format!("{}: {}", peer.ip(), peer.port()),
            None => "an unknown address".to_owned(),
        };
        TimeServerSession {
            log: Some(format!("TimeServer: Received connect from {peer}")),
            answer: AnswerSession::blocking(self.answer(info.wall), self.delay),
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// The answer, preceded by the course's log line.
#[derive(Debug)]
pub struct TimeServerSession {
    log: Option<String>,
    answer: AnswerSession,
}

impl Session for TimeServerSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = ();

    fn handle_open(&mut self, now: Instant, out: &mut Output<Nothing, ()>) {
        if let Some(line) = self.log.take() {
            out.log(Level::Info, line);
        }
        self.answer.handle_open(now, out);
    }

    fn handle_completion(&mut self, now: Instant, token: Token, done: (), out: &mut Output<Nothing, ()>) {
        self.answer.handle_completion(now, token, done, out);
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<Nothing, ()>) {
        self.answer.handle_input(now, data, out);
    }

    fn handle_read_closed(&mut self, now: Instant, out: &mut Output<Nothing, ()>) {
        self.answer.handle_read_closed(now, out);
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing, ()>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing, ()>) {
        self.answer.handle_timeout(now, out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.answer.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Job, Output, Session, SessionId, Token};

    fn info() -> ConnInfo {
        ConnInfo { id: SessionId(1), peer: Some(([127, 0, 0, 1], 57566).into()), wall: SystemTime::UNIX_EPOCH, seed: 0 }
    }

    #[test]
    fn logs_answers_then_blocks_then_closes() {
        let t0 = Instant::now();
        let server = TimeServer { delay: Duration::from_millis(10), ..TimeServer::default() };
        let mut s = server.new_session(&info(), t0);
        let mut out = Output::new();
        s.handle_open(t0, &mut out);
        assert_eq!(out.pending(), b"Thursday, January 1, 1970 00:00:00-UTC\r\n");
        assert!(matches!(out.poll_action(), Some(Action::Log(Level::Info, line))
            if line == "TimeServer: Received connect from 127.0.0.1: 57566"));
        assert!(matches!(out.poll_action(), Some(Action::Job(_, Job::Blocking(_)))));
        assert!(!out.is_closed(), "closes once the blocking call is over");
        s.handle_completion(t0, Token(0), (), &mut out);
        assert!(out.is_closed());
    }

    #[test]
    fn each_wire_form() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_616_083);
        let java = TimeServer { format: TimeFormat::Java, ..TimeServer::default() };
        assert_eq!(java.answer(wall), java_date::encode_java_date(wall));
        let ctime = TimeServer { format: TimeFormat::Ctime, ..TimeServer::default() };
        assert_eq!(ctime.answer(wall), b"Mon Dec  7 04:01:23 2026\r\n");
        let paris = TimeServer { zone: |_| UtcOffset::from_hms(1, 0, 0).unwrap(), ..ctime };
        assert_eq!(paris.answer(wall), b"Mon Dec  7 05:01:23 2026\r\n");
        assert_eq!(format_java_date(wall, UtcOffset::UTC, "UTC"), "Mon Dec 07 04:01:23 UTC 2026");
        assert_eq!("ctime".parse(), Ok(TimeFormat::Ctime));
        assert!("xml".parse::<TimeFormat>().unwrap_err().contains("java, ctime or text"));
    }
}
