//! What an endpoint asks to be checked with, read from its metadata:
//!
//! | key | value | default |
//! |---|---|---|
//! | `check` | `tcp`, `http:/path` or `ttl:10s` | no check: always healthy |
//! | `check_interval` | how often (tcp, http), at least 1 s | `2s` |
//! | `check_timeout` | how long one probe may take, 10 ms to the interval | `1s` |
//! | `rise` | passes in a row that bring an unhealthy endpoint back | `2` |
//! | `fall` | failures in a row that take a healthy endpoint out | `3` |
//!
//! A `ttl` check is the endpoint's own heartbeat (Consul's TTL check): it stays healthy while
//! somebody reports it passing within the TTL (`PUT /v1/health/<name>/<addr>:<port>/pass` on
//! the HTTP API, with the name's token), and goes unhealthy when the reports stop, without being
//! removed.
//!
//! A probe goes to the endpoint's own address and port, over TCP, and nowhere else: no key names
//! another target, an HTTP check sends only a path, and an endpoint that cannot be probed (a
//! wildcard, multicast or broadcast address, port 0, or a UDP endpoint with a tcp or http check)
//! is refused. A check runs at most once a second, and a name has at most
//! [`MAX_CHECKS_PER_NAME`] checked endpoints, so that nobody turns the registry into a flood or
//! a scanner (Consul's agent likewise keeps its checks' intervals to at least a second).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use warren_registry::model::{Endpoint, Error, Transport};

/// The shortest interval and TTL, so that checks cannot be turned into a flood.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest probe timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Checked endpoints per name, at most (a name may have more endpoints, unchecked).
pub const MAX_CHECKS_PER_NAME: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String },
    /// Reported passing at least once per TTL.
    Ttl(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl CheckSpec {
    /// The check an endpoint's metadata asks for; `None` for none; `Invalid` for nonsense.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Result<Option<CheckSpec>, Error> {
        let Some(check) = meta.get("check") else { return Ok(None) };
        let bad = |what: &str| Error::Invalid(format!("health check: {what}"));
        let probe = match check.split_once(':') {
            None if check == "tcp" => Probe::Tcp,
            // An origin-form path only: `//host/…` would read as naming another host.
            Some(("http", path))
                if path.starts_with('/')
                    && !path.starts_with("//")
                    && !path.bytes().any(|b| b <= b' ' || b == 0x7f) =>
            {
                Probe::Http { path: path.to_owned() }
            }
            Some(("ttl", ttl)) => {
                Probe::Ttl(duration(ttl, MIN_INTERVAL).ok_or_else(|| bad(&format!("ttl {ttl:?}: 1s to 1 day")))?)
            }
            _ => return Err(bad(&format!("check {check:?}: use tcp, http:/path or ttl:<duration>"))),
        };
        let time = |key: &str, default: Duration, min: Duration| match meta.get(key) {
            None => Ok(default),
            Some(v) => duration(v, min).ok_or_else(|| bad(&format!("{key} {v:?}: {min:?} to 1 day"))),
        };
        let count = |key: &str, default: u32| match meta.get(key) {
            None => Ok(default),
            Some(v) => {
                v.parse().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| bad(&format!("{key} {v:?}: 1 to 100")))
            }
        };
        let spec = CheckSpec {
            probe,
            interval: time("check_interval", Duration::from_secs(2), MIN_INTERVAL)?,
            timeout: time("check_timeout", Duration::from_secs(1), MIN_TIMEOUT)?,
            rise: count("rise", 2)?,
            fall: count("fall", 3)?,
        };
        if spec.timeout > spec.interval {
            return Err(bad("check_timeout must not be longer than check_interval"));
        }
        Ok(Some(spec))
    }

    /// The check `e` asks for, refused if `e` cannot be probed at its own address.
    pub fn for_endpoint(e: &Endpoint) -> Result<Option<CheckSpec>, Error> {
        let Some(spec) = CheckSpec::from_meta(&e.meta)? else { return Ok(None) };
        if matches!(spec.probe, Probe::Ttl(_)) {
            return Ok(Some(spec)); // nothing is probed
        }
        let bad = |why: &str| Err(Error::Invalid(format!("health check of {}: {why}", e.socket_addr())));
        if e.transport == Transport::Udp {
            return bad("tcp and http checks probe over TCP; a UDP endpoint can have a ttl check");
        }
        let unroutable = match e.addr {
            IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if unroutable || e.port == 0 {
            return bad("not an address a probe can reach");
        }
        Ok(Some(spec))
    }
}

/// A duration like `500ms`, `2s` or `1m`, at least `min` and at most a day.
fn duration(text: &str, min: Duration) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (min..=Duration::from_secs(86_400)).contains(&d).then_some(d)
}

/// Whether an endpoint counts as healthy, from its probes' results: the first result decides
/// at once; after that it takes `fall` failures in a row to go unhealthy and `rise` passes in a
/// row to come back (HAProxy's rise and fall), so one lost probe does not flap DNS answers.
#[derive(Clone, Debug)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    healthy: Option<bool>,
    streak: u32,
}

impl Tracker {
    pub fn new(spec: &CheckSpec) -> Tracker {
        Tracker { rise: spec.rise, fall: spec.fall, healthy: None, streak: 0 }
    }

    /// Until the first result, an endpoint is served (a fresh registration is reachable at once).
    pub fn healthy(&self) -> bool {
        self.healthy.unwrap_or(true)
    }

    /// Records one probe's result; whether the endpoint's health changed.
    pub fn record(&mut self, passed: bool) -> bool {
        let before = self.healthy();
        match self.healthy {
            None => self.healthy = Some(passed),
            Some(h) if h == passed => self.streak = 0,
            Some(h) => {
                self.streak += 1;
                if self.streak >= if h { self.fall } else { self.rise } {
                    self.healthy = Some(passed);
                    self.streak = 0;
                }
            }
        }
        before != self.healthy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn specs_parse_with_defaults_and_bad_ones_are_refused() {
        assert_eq!(CheckSpec::from_meta(&meta(&[("zone", "eu")])), Ok(None));
        let tcp = CheckSpec::from_meta(&meta(&[("check", "tcp")])).unwrap().unwrap();
        assert_eq!((tcp.probe, tcp.interval, tcp.rise, tcp.fall), (Probe::Tcp, Duration::from_secs(2), 2, 3));
        let http = meta(&[("check", "http:/health"), ("check_interval", "1500ms"), ("rise", "1"), ("fall", "1")]);
        let http = CheckSpec::from_meta(&http).unwrap().unwrap();
        assert_eq!(http.probe, Probe::Http { path: "/health".into() });
        assert_eq!(http.interval, Duration::from_millis(1500));
        let quick = meta(&[("check", "tcp"), ("check_timeout", "10ms")]);
        assert_eq!(CheckSpec::from_meta(&quick).unwrap().unwrap().timeout, MIN_TIMEOUT);
        let ttl = CheckSpec::from_meta(&meta(&[("check", "ttl:10s")])).unwrap().unwrap();
        assert_eq!(ttl.probe, Probe::Ttl(Duration::from_secs(10)));
        for bad in [
            &[("check", "icmp")][..],
            &[("check", "http:health")],
            &[("check", "http:/a b")],
            &[("check", "ttl:0s")],
            &[("check", "tcp"), ("check_interval", "1ms")],
            &[("check", "tcp"), ("check_interval", "999ms")],
            &[("check", "ttl:500ms")],
            &[("check", "tcp"), ("check_interval", "1s"), ("check_timeout", "2s")],
            &[("check", "tcp:10.0.0.1:22")],
            &[("check", "http://10.0.0.1/x")],
            &[("check", "http:/x HTTP/1.1\r\nHost: evil")],
            &[("check", "tcp"), ("rise", "0")],
            &[("check", "tcp"), ("fall", "x")],
            &[("check", "tcp"), ("check_timeout", "2h")],
        ] {
            assert!(matches!(CheckSpec::from_meta(&meta(bad)), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn only_the_endpoints_own_reachable_address_is_probed() {
        let checked = |addr: &str, udp: bool, check: &str| {
            let mut e = Endpoint::tcp(addr.parse().unwrap());
            e.transport = if udp { Transport::Udp } else { Transport::Tcp };
            e.meta = meta(&[("check", check)]);
            CheckSpec::for_endpoint(&e)
        };
        assert!(checked("127.0.0.1:80", false, "tcp").unwrap().is_some());
        assert!(checked("127.0.0.1:53", true, "ttl:10s").unwrap().is_some(), "a ttl check probes nothing");
        for (addr, udp, check) in [
            ("0.0.0.0:80", false, "tcp"),
            ("[::]:80", false, "http:/"),
            ("224.0.0.1:80", false, "tcp"),
            ("255.255.255.255:80", false, "tcp"),
            ("127.0.0.1:0", false, "tcp"),
            ("127.0.0.1:53", true, "tcp"),
        ] {
            assert!(matches!(checked(addr, udp, check), Err(Error::Invalid(_))), "{addr} {check}");
        }
    }

    #[test]
    fn first_result_decides_then_rise_and_fall_debounce() {
        let spec = CheckSpec { probe: Probe::Tcp, interval: MIN_INTERVAL, timeout: MIN_INTERVAL, rise: 2, fall: 3 };
        let mut t = Tracker::new(&spec);
        assert!(t.healthy(), "served until the first probe");
        assert!(t.record(false) && !t.healthy(), "the first result decides at once");
        assert!(!t.record(true) && !t.healthy());
        assert!(!t.record(false), "a failure breaks the rise streak");
        assert!(!t.record(true));
        assert!(t.record(true) && t.healthy(), "two passes in a row bring it back");
        assert!(!t.record(false) && !t.record(false) && t.healthy());
        assert!(!t.record(true), "a pass resets the fall streak");
        assert!(!t.record(false) && !t.record(false));
        assert!(t.record(false) && !t.healthy(), "three failures in a row take it out");
    }
}
