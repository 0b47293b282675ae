//! Access control: `only_from`, `no_access` and `access_times`.
//!
//! Host names are resolved once, when the config is loaded: a name lookup per connection would
//! stall the node's one loop (xinetd's own manual warns of the same). Between the two lists
//! the most specific match wins, and a tie denies.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

/// An address pattern: a network given by an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(net).into(), self.prefix, 32) == mask(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), self.prefix, 128) == mask(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }

    /// Parse one xinetd pattern: `a.b.c.d`, `a.b.c.0` (trailing zeros are wildcards), CIDR
    /// `a.b.c.d/n` or `x::y/n`, factorised `a.b.{c,d}`, or a host name (resolved now). `0.0.0.0`
    /// matches everyone. Returns several networks for factorised patterns and names.
    pub fn parse(pattern: &str) -> Result<Vec<Net>, String> {
        if let Some((addr, prefix)) = pattern.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("{pattern:?}: not an address/prefix"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = prefix.parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("{pattern:?}: bad prefix"))?;
            return Ok(vec![Net { addr, prefix }]);
        }
        if let (Some(open), Some(body)) = (pattern.find('{'), pattern.strip_suffix('}')) {
            let (head, alternatives) = (&pattern[..open], &body[open + 1..]);
            return alternatives
                .split(',')
                .map(|alt| Net::parse(&format!("{head}{}", alt.trim())))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat());
        }
        if let Ok(v4) = pattern.parse::<Ipv4Addr>() {
            // xinetd: trailing zero octets are wildcards (`10.0.0.0` is 10/8, `0.0.0.0` all).
            let zeros = v4.octets().iter().rev().take_while(|o| **o == 0).count() as u8;
            return Ok(vec![Net { addr: v4.into(), prefix: 32 - 8 * zeros }]);
        }
        if let Ok(v6) = pattern.parse::<IpAddr>() {
            return Ok(vec![Net { addr: v6, prefix: 128 }]);
        }
        if pattern.starts_with('.') {
            return Err(format!(
                "{pattern:?}: domain patterns need a reverse lookup per connection, which the node does not make; use addresses or networks"
            ));
        }
        let addrs = (pattern, 0).to_socket_addrs().map_err(|e| format!("{pattern:?}: cannot resolve: {e}"))?;
        let nets: Vec<Net> = addrs.map(|a| Net { addr: a.ip(), prefix: if a.is_ipv4() { 32 } else { 128 } }).collect();
        if nets.is_empty() {
            return Err(format!("{pattern:?}: no address"));
        }
        Ok(nets)
    }
}

fn mask(value: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 { 0 } else { value >> (width - prefix) }
}

/// A daily interval, in minutes since local midnight, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    from: u16,
    to: u16,
}

impl TimeRange {
    /// Parse `hh:mm-hh:mm`.
    pub fn parse(text: &str) -> Result<TimeRange, String> {
        let minutes = |hm: &str| -> Option<u16> {
            let (h, m) = hm.split_once(':')?;
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or(format!("{text:?}: want hh:mm-hh:mm"))?;
        match (minutes(a), minutes(b)) {
            (Some(from), Some(to)) => Ok(TimeRange { from, to }),
            _ => Err(format!("{text:?}: want hh:mm-hh:mm")),
        }
    }

    fn contains(&self, minute: u16) -> bool {
        if self.from <= self.to {
            (self.from..=self.to).contains(&minute)
        } else {
            minute >= self.from || minute <= self.to
        }
    }
}

/// Who may connect and when.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// `only_from`: `None` admits everyone, an empty list nobody.
    pub only_from: Option<Vec<Net>>,
    /// `no_access`.
    pub no_access: Vec<Net>,
    /// `access_times`: empty means always.
    pub times: Vec<TimeRange>,
}

/// Why a connection was refused, as xinetd's log names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Address lists.
    Address,
    /// Outside `access_times`.
    Time,
}

impl Access {
    /// Whether `ip` may connect at `minute` past local midnight.
    pub fn check(&self, ip: IpAddr, minute: u16) -> Result<(), Denied> {
        if !self.times.is_empty() && !self.times.iter().any(|t| t.contains(minute)) {
            return Err(Denied::Time);
        }
        let best = |list: &[Net]| list.iter().filter(|n| n.contains(ip)).map(|n| n.prefix).max();
        let denied = best(&self.no_access);
        let allowed = match &self.only_from {
            None => Some(0),
            Some(list) => best(list),
        };
        match (allowed, denied) {
            (Some(a), Some(d)) if a > d => Ok(()),
            (Some(_), None) => Ok(()),
            _ => Err(Denied::Address),
        }
    }

    /// Whether a time check is needed at all (it costs a `localtime` call).
    pub fn has_times(&self) -> bool {
        !self.times.is_empty()
    }
}

/// Minutes past local midnight now.
pub fn local_minute() -> u16 {
    // SAFETY: `time(NULL)` has no preconditions; `localtime_r` writes only into `tm`.
    unsafe {
        let now = nix::libc::time(std::ptr::null_mut());
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        (tm.tm_hour * 60 + tm.tm_min) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(patterns: &[&str]) -> Vec<Net> {
        patterns.iter().flat_map(|p| Net::parse(p).unwrap()).collect()
    }

    #[test]
    fn patterns() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(nets(&["10.0.0.0"])[0].contains(ip("10.9.8.7")));
        assert!(nets(&["0.0.0.0"])[0].contains(ip("192.0.2.1")));
        assert!(nets(&["127.0.0.0/8"])[0].contains(ip("::ffff:127.0.0.1")));
        assert!(!nets(&["192.168.1.0/24"])[0].contains(ip("192.168.2.1")));
        assert_eq!(nets(&["10.1.2.{3,4}"]).len(), 2);
        assert!(nets(&["10.1.2.{3,4}"])[1].contains(ip("10.1.2.4")));
        assert!(nets(&["::1"])[0].contains(ip("::1")));
        assert!(Net::parse(".example.com").is_err());
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(nets(&["localhost"]).iter().any(|n| n.contains(ip("127.0.0.1"))));
    }

    #[test]
    fn most_specific_match_wins() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let access = Access { only_from: Some(nets(&["127.0.0.1"])), no_access: nets(&["127.0.0.0/8"]), times: vec![] };
        assert_eq!(access.check(lo, 0), Ok(()));
        let access = Access { only_from: Some(nets(&["127.0.0.0/8"])), no_access: nets(&["127.0.0.1"]), times: vec![] };
        assert_eq!(access.check(lo, 0), Err(Denied::Address));
        let nobody = Access { only_from: Some(vec![]), ..Access::default() };
        assert_eq!(nobody.check(lo, 0), Err(Denied::Address));
        assert_eq!(Access::default().check(lo, 0), Ok(()));
    }

    #[test]
    fn times_wrap_around_midnight() {
        let night = Access { times: vec![TimeRange::parse("22:00-06:30").unwrap()], ..Access::default() };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(night.check(lo, 23 * 60), Ok(()));
        assert_eq!(night.check(lo, 6 * 60 + 30), Ok(()));
        assert_eq!(night.check(lo, 12 * 60), Err(Denied::Time));
        assert!(TimeRange::parse("25:00-26:00").is_err());
    }
}
