//! Attribute values: sizes, counts, rates, address lists, banners, log options, users and
//! `/etc/services`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::Resource;

use super::Attrs;
use crate::access::Net;
use crate::config::{Cps, Credentials, LogOptions, Transport};

pub(super) fn credentials(user: &str, group: Option<&str>, supplementary: bool) -> Result<Credentials, String> {
    use nix::unistd::{Group, User};
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()),
        Err(_) => User::from_name(user),
    };
    let found = found.map_err(|e| format!("user {user:?}: {e}"))?.ok_or(format!("user {user:?}: no such user"))?;
    let gid = match group {
        None => found.gid.as_raw(),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g).ok().flatten().ok_or(format!("group {g:?}: no such group"))?.gid.as_raw(),
        },
    };
    Ok(Credentials { name: found.name, uid: found.uid.as_raw(), gid, supplementary })
}

pub(super) fn rlimits(a: &Attrs) -> Result<Vec<(Resource, Option<u64>)>, String> {
    let table = [
        ("rlimit_as", Resource::RLIMIT_AS),
        ("rlimit_cpu", Resource::RLIMIT_CPU),
        ("rlimit_data", Resource::RLIMIT_DATA),
        ("rlimit_stack", Resource::RLIMIT_STACK),
        ("rlimit_files", Resource::RLIMIT_NOFILE),
    ];
    table
        .iter()
        .filter_map(|(attr, res)| a.one(attr).transpose().map(|v| v.and_then(|v| Ok((*res, size(v)?)))))
        .collect()
}

/// A size: bytes with an optional K or M suffix, or `UNLIMITED` (`None`).
pub fn size(text: &str) -> Result<Option<u64>, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).map(Some).ok_or(format!("not a size: {text:?}"))
}

pub(super) fn count(a: &Attrs, name: &str) -> Result<Option<u32>, String> {
    match a.one(name)? {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("unlimited") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| format!("{name}: want a number or UNLIMITED, found {v:?}")),
    }
}

pub(super) fn cps(a: &Attrs) -> Result<Option<Option<Cps>>, String> {
    match a.get("cps") {
        None => Ok(None),
        Some([rate, wait]) => match (rate.parse::<u32>(), wait.parse::<u64>()) {
            (Ok(0), Ok(_)) => Ok(Some(None)),
            (Ok(rate), Ok(wait)) => Ok(Some(Some(Cps { rate, wait: Duration::from_secs(wait.max(1)) }))),
            _ => Err("cps: want <connections per second> <seconds to wait>".into()),
        },
        Some(_) => Err("cps: want <connections per second> <seconds to wait>".into()),
    }
}

pub(super) fn nets(patterns: &[String]) -> Result<Vec<Net>, String> {
    patterns.iter().map(|p| Net::parse(p)).collect::<Result<Vec<_>, _>>().map(|v| v.concat())
}

pub(super) fn banner(a: &Attrs, name: &str) -> Result<Option<Arc<[u8]>>, String> {
    a.one(name)?.map(|path| std::fs::read(path).map(Arc::from).map_err(|e| format!("{name} {path}: {e}"))).transpose()
}

pub(super) fn log_options(a: &Attrs) -> Result<LogOptions, String> {
    let mut log = LogOptions::default();
    if let Some(success) = a.get("log_on_success") {
        let has = |w: &str| success.iter().any(|s| s == w);
        (log.pid, log.host, log.exit, log.duration, log.traffic) =
            (has("PID"), has("HOST"), has("EXIT"), has("DURATION"), has("TRAFFIC"));
        check_words("log_on_success", success, &["PID", "HOST", "USERID", "EXIT", "DURATION", "TRAFFIC"])?;
    }
    if let Some(failure) = a.get("log_on_failure") {
        log.failure = !failure.is_empty();
        log.attempt = failure.iter().any(|s| s == "ATTEMPT");
        check_words("log_on_failure", failure, &["HOST", "USERID", "ATTEMPT", "RECORD"])?;
    }
    Ok(log)
}

fn check_words(name: &str, words: &[String], known: &[&str]) -> Result<(), String> {
    match words.iter().find(|w| !known.contains(&w.as_str())) {
        Some(w) => Err(format!("{name}: unknown {w:?}")),
        None => Ok(()),
    }
}

/// The port of `name` for `transport` in `/etc/services` (names and aliases).
pub(super) fn well_known_port(name: &str, transport: Transport) -> Option<u16> {
    let text = std::fs::read_to_string(Path::new("/etc/services")).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let (service, port_proto) = (fields.next()?, fields.next()?);
        let (port, proto) = port_proto.split_once('/')?;
        (proto == transport.name() && (service == name || fields.any(|alias| alias == name)))
            .then(|| port.parse().ok())?
    })
}
