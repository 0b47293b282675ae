//! The demo application of `/visits`: one visit counter kept per client in two ways, side by
//! side, to show what stateless and soft state cost and survive.
//!
//! - **`/visits/cookie` (stateless)**: the count travels in a cookie
//!   `warren_visits=<count>.<expiry>.<mac>`, the MAC an HMAC-SHA256 over `count.expiry` under the
//!   server's key, compared in constant time. The server stores nothing. A cookie that fails the
//!   check (a changed count, a changed MAC, another server's key, an expired one) is never
//!   trusted: the count starts again at 1, and the session logs it at `Debug`.
//! - **`/visits/session` (soft state)**: the count lives in a [`VisitsHub`] table shared by every
//!   connection (in the hub process under `fork` and `prefork`), keyed by a 128-bit id in the
//!   cookie `warren_session`. Entries live [`VisitsConfig::ttl`] after their last use (each use
//!   renews them), the table holds at most [`VisitsConfig::max_sessions`] (the entry closest to
//!   expiry, i.e. the least recently used, is evicted first), and expired entries are swept on
//!   every access, so they never count. An unknown id gets a fresh one: a client cannot choose its
//!   id (no session fixation).
//!
//! **Restarts**: the cookie counter survives a restart whenever the key does (`warren serve http`
//! keeps it in a private file), because the state is at the client. The session table does not:
//! it is soft state in memory, and a client coming back with an old id starts again at 1. See
//! `docs/http-state.md`.
//!
//! Session ids are `HMAC(key, "session-id" seed counter)` truncated to 128 bits: unpredictable to
//! anyone without the key, and distinct across restarts as long as the seed differs (the server
//! draws one from the OS at start) — the core itself reads no randomness and no clock.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::request::Head;
use super::response::unix_secs;
use crate::{Hub, HubOutput, Nothing, SessionId};

type HmacSha256 = Hmac<Sha256>;

/// The cookie holding the stateless count.
pub const COUNT_COOKIE: &str = "warren_visits";
/// The cookie holding the soft-state session id.
pub const SESSION_COOKIE: &str = "warren_session";
/// How long a count cookie stays valid (and what its `Max-Age` says): 30 days.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// The demo's configuration, shared by the service, its sessions and its hub.
#[derive(Clone)]
pub struct VisitsConfig {
    /// The HMAC key: signs count cookies and derives session ids. Keep it secret and stable.
    pub key: [u8; 32],
    /// How long a session lives after its last use. Default 10 minutes.
    pub ttl: Duration,
    /// The most sessions the table holds. Default 10,000.
    pub max_sessions: usize,
    /// Seeds session ids: must differ between runs with the same key.
    pub seed: u64,
}

impl VisitsConfig {
    /// The defaults around `key` and `seed`.
    pub fn new(key: [u8; 32], seed: u64) -> Self {
        Self { key, ttl: Duration::from_secs(600), max_sessions: 10_000, seed }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// The count cookie's value for `count`, valid until `expiry` (Unix seconds).
    pub fn sign(&self, count: u64, expiry: u64) -> String {
        let payload = format!("{count}.{expiry}");
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", hex(&mac.finalize().into_bytes()))
    }

    /// The count in a cookie value, if its MAC holds and it has not expired at `now`.
    pub fn verify(&self, value: &str, now: SystemTime) -> Option<u64> {
        let (payload, tag) = value.rsplit_once('.')?;
        let (count, expiry) = payload.split_once('.')?;
        let tag = unhex(tag)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant time: a timing difference would let a forger find the MAC byte by byte.
        mac.verify_slice(&tag).ok()?;
        // Parsed only once authentic: the server signed exactly these digits.
        let (count, expiry) = (count.parse::<u64>().ok()?, expiry.parse::<u64>().ok()?);
        (unix_secs(now) < expiry).then_some(count)
    }

    /// The `n`th session id of this run.
    fn session_id(&self, n: u64) -> u128 {
        let mut mac = self.mac();
        mac.update(b"session-id");
        mac.update(&self.seed.to_be_bytes());
        mac.update(&n.to_be_bytes());
        let bytes = mac.finalize().into_bytes();
        u128::from_be_bytes(bytes[..16].try_into().expect("SHA-256 is 32 bytes"))
    }
}

impl std::fmt::Debug for VisitsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: debug output ends up in logs.
        f.debug_struct("VisitsConfig").field("ttl", &self.ttl).field("max_sessions", &self.max_sessions).finish()
    }
}

/// What an HTTP session asks the visits hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisitsRequest {
    /// Count one visit of the session `id` the client presented (if any); a missing, unknown
    /// or expired id gets a fresh session.
    Visit { id: Option<u128> },
}

/// What the visits hub answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisitsMessage {
    /// The session's id (new or the same) and its count, this visit included.
    Visited { id: u128, count: u64 },
}

#[derive(Debug)]
struct Entry {
    count: u64,
    expires: Instant,
}

/// The soft-state session table. `by_expiry` orders the same entries by when they expire, so
/// that the sweep and the eviction both take from its front.
#[derive(Debug)]
pub struct VisitsHub {
    config: Option<VisitsConfig>,
    sessions: HashMap<u128, Entry>,
    by_expiry: BTreeSet<(Instant, u128)>,
    issued: u64,
    evicted: u64,
}

impl VisitsHub {
    /// An empty table; `None` when the demo is off (any request is then a bug in the session).
    pub fn new(config: Option<VisitsConfig>) -> Self {
        Self { config, sessions: HashMap::new(), by_expiry: BTreeSet::new(), issued: 0, evicted: 0 }
    }

    /// How many sessions are live (expired ones may remain until the next access).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forget every session expired at `now`.
    fn sweep(&mut self, now: Instant) {
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.sessions.remove(&id);
        }
    }

    /// Count one visit of `id` at `now`; the id (maybe new) and the count.
    pub fn visit(&mut self, now: Instant, id: Option<u128>) -> (u128, u64) {
        let Some(config) = self.config.clone() else {
            return (0, 0);
        };
        let expires = now + config.ttl;
        let max = config.max_sessions.max(1);
        self.sweep(now);
        if let Some(entry) = id.and_then(|id| self.sessions.get_mut(&id).map(|e| (id, e))) {
            let (id, entry) = entry;
            self.by_expiry.remove(&(entry.expires, id));
            entry.count += 1;
            entry.expires = expires;
            self.by_expiry.insert((expires, id));
            return (id, entry.count);
        }
        while self.sessions.len() >= max {
            let (_, oldest) = self.by_expiry.pop_first().expect("the index holds every session");
            self.sessions.remove(&oldest);
            self.evicted += 1;
        }
        let id = loop {
            self.issued += 1;
            let id = config.session_id(self.issued);
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(id, Entry { count: 1, expires });
        self.by_expiry.insert((expires, id));
        (id, 1)
    }
}

impl Hub for VisitsHub {
    type Request = VisitsRequest;
    type Message = VisitsMessage;
    type Done = Nothing;

    fn handle_request(&mut self, now: Instant, from: SessionId, request: VisitsRequest, out: &mut HubOutput<Self>) {
        let VisitsRequest::Visit { id } = request;
        let (id, count) = self.visit(now, id);
        out.push(from, VisitsMessage::Visited { id, count });
    }

    fn handle_leave(&mut self, _: Instant, _: SessionId, _: &mut HubOutput<Self>) {
        // A session outlives its connection: that is the point of the table.
    }

    fn report(&self, _: Instant) -> Option<String> {
        (self.issued > 0).then(|| {
            format!("visits: {} sessions issued, {} live, {} evicted", self.issued, self.sessions.len(), self.evicted)
        })
    }
}

/// Which counter a request target names, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Cookie,
    Session,
}

/// The route of a target (`/visits/cookie`, `/visits/session`, query ignored).
pub fn route(target: &str) -> Option<Route> {
    match target.split_once('?').map_or(target, |(path, _)| path) {
        "/visits/cookie" => Some(Route::Cookie),
        "/visits/session" => Some(Route::Session),
        _ => None,
    }
}

/// Every value of the cookie `name` in the request, in order.
pub fn cookies<'a>(head: &'a Head, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    head.headers_named("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| pair.trim().split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v.trim()))
}

/// The session id in a `warren_session` value.
pub fn parse_session_id(value: &str) -> Option<u128> {
    (value.len() == 32).then(|| u128::from_str_radix(value, 16).ok()).flatten()
}

/// The `Set-Cookie` value for a session id: a browser session cookie, renewed on every answer.
pub fn session_cookie(id: u128) -> String {
    format!("{SESSION_COOKIE}={id:032x}; Path=/visits; HttpOnly; SameSite=Lax")
}

/// The `Set-Cookie` value for a signed count.
pub fn count_cookie(value: &str) -> String {
    format!("{COUNT_COOKIE}={value}; Path=/visits; Max-Age={}; HttpOnly; SameSite=Lax", COOKIE_LIFETIME.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}
