//! Admission for builtin services: the same xinetd rules the node applies to its exec services
//! (`only_from`, `no_access`, `access_times`, `max_load`, `cps`, `instances`, `per_source`),
//! asked by the model's acceptor on the builtin's own thread (see `warren_models::accept::Gate`).
//!
//! A builtin's connections never pass through the node's loop, so the rules and their counters
//! live here, behind a lock the acceptor takes once per connection. The differences from exec
//! services: a refused connection is closed at once (xinetd leaves a paused listener's backlog
//! waiting; here the builtin keeps accepting and refuses), and `cps` refuses every connection
//! for its `wait` instead of pausing the listener.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use warren_models::accept::Gate;

use crate::config::Service;
use crate::exec::{Counters, Refusal, load_average};

/// The rules of one builtin service, with its counters.
#[derive(Debug)]
pub struct Admission {
    service: Service,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: Counters,
    /// Over `cps`: everything is refused until then.
    paused_until: Option<Instant>,
}

impl Admission {
    /// The gate for `service`. A service without any rule gets one too: it admits everything
    /// and only counts, so that `warren status` and the dashboard show every builtin's
    /// connections (one uncontended lock per connection, beside an accept and a close).
    pub fn for_service(service: &Service) -> Admission {
        Admission { service: service.clone(), state: Mutex::new(State::default()) }
    }

    /// Connections served now, admitted since start, refused since start, and admitted in the
    /// last whole second: the figures `warren status` shows.
    pub fn counts(&self) -> (u32, u64, u64, u32) {
        let c = &self.lock().counters;
        (c.running, c.spawned, c.refused, c.last_rate)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refused(&self, state: &mut State, peer: IpAddr, refusal: Refusal, now: Instant) {
        state.counters.refused += 1;
        if let (Refusal::Cps, Some(cps)) = (refusal, self.service.limits.cps) {
            tracing::warn!(target: "warren::node", service = %self.service.name, wait = ?cps.wait, "over {} connections/s: refusing", cps.rate);
            state.paused_until = Some(now + cps.wait);
        }
        if self.service.log.failure {
            tracing::warn!(target: "warren::node", service = %self.service.name, from = %peer, reason = refusal.name(), "FAIL");
        }
    }
}

impl Gate for Admission {
    fn admit(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(until) = state.paused_until {
            if now < until {
                state.counters.refused += 1;
                return false;
            }
            state.paused_until = None;
            state.counters.reset_window();
        }
        match state.counters.admit(&self.service, peer, now, load_average) {
            Ok(()) => true,
            Err(refusal) => {
                self.refused(&mut state, peer, refusal, now);
                false
            }
        }
    }

    fn release(&self, peer: IpAddr) {
        self.lock().counters.release(Some(peer));
    }
}
