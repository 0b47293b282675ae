//! DNS over TCP (RFC 7766) as a session like every other protocol's: queries in sequence on one
//! connection, each with a 2-byte length prefix, answered through [`answer`]. The server runs it
//! under the `event` model, with the models' limits: a connection refused beyond
//! [`Config::max_tcp_connections`], and one closed when its next query has not fully arrived
//! within [`Config::tcp_idle_timeout`] or when it sends an empty or over-long frame, or
//! something that is not a query.

use std::sync::Arc;
use std::time::Instant;

use warren_proto::{ConnInfo, Deadline, Limits, NoHub, Nothing, Output, Service, Session};

use crate::answer::{MAX_QUERY, Transport, answer};
use crate::metrics::Dropped;
use crate::server::Shared;

/// The TCP side of a DNS server.
pub(crate) struct DnsTcp {
    pub(crate) shared: Arc<Shared>,
}

impl Service for DnsTcp {
    type Hub = NoHub;
    type Session = DnsTcpSession;

    fn name(&self) -> &'static str {
        "dns"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> DnsTcpSession {
        let idle = self.shared.config.tcp_idle_timeout;
        let limits = Limits { idle_timeout: idle, read_timeout: idle, max_request: MAX_QUERY };
        DnsTcpSession { shared: self.shared.clone(), buf: Vec::new(), deadline: Deadline::new(&limits, now) }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One DNS connection.
pub(crate) struct DnsTcpSession {
    shared: Arc<Shared>,
    /// Bytes of the next query not complete yet.
    buf: Vec<u8>,
    deadline: Deadline,
}

type Out = Output<Nothing>;

impl DnsTcpSession {
    /// Answer every complete query in the buffer; close on a frame that cannot be one.
    fn answer_ready(&mut self, now: Instant, out: &mut Out) {
        let mut at = 0;
        while let Some(len) = self.buf.get(at..at + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) {
            if len == 0 || len > MAX_QUERY {
                return out.close();
            }
            let Some(query) = self.buf.get(at + 2..at + 2 + len) else { break };
            let shared = &*self.shared;
            shared.metrics.query(Transport::Tcp, query);
            let Some(response) = answer(query, &*shared.directory, &shared.config, &shared.rotation, Transport::Tcp)
            else {
                shared.metrics.dropped(Dropped::Unanswerable);
                return out.close();
            };
            // The clock is read only for the metrics: the answer itself depends on none.
            shared.metrics.answer(Transport::Tcp, &response, now.elapsed());
            let len = u16::try_from(response.len()).expect("TCP answers are limited to 65535 bytes");
            out.send(&len.to_be_bytes());
            out.send(&response);
            at += 2 + query.len();
        }
        self.buf.drain(..at);
    }
}

impl Session for DnsTcpSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.buf.extend_from_slice(data);
        self.answer_ready(now, out);
        self.deadline.input(now, !self.buf.is_empty());
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if self.deadline.expired(now).is_some() {
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}
