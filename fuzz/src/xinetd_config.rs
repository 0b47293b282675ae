//! `xinetd_config`: any bytes, as (lossy UTF-8) text, into the node's xinetd parser.
//!
//! Inputs that would reach outside the process are skipped: `include`/`includedir` and banners
//! read files, and host names in `only_from`, `no_access`, `redirect` and `bind` would be looked
//! up; their address forms are checked through [`Net::parse`] on purely numeric words instead.
//!
//! Checks, whatever the input:
//! - no panic;
//! - parsing is deterministic (two parses give equal configs or equal errors);
//! - a loaded config has unique service names, unique non-zero listeners, and a non-empty
//!   `argv` for every exec service;
//! - every error names the file, and a line within the input.

use warren_node::access::Net;
use warren_node::config::Kind;
use warren_node::xinetd;

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if ["include", "banner"].iter().any(|k| text.contains(k)) {
        return;
    }
    for line in text.lines() {
        let resolving = ["only_from", "no_access", "redirect", "bind", "interface"].iter().any(|k| line.contains(k));
        if resolving {
            let value = line.split_once('=').map_or(line, |(_, v)| v);
            if value.chars().any(|c| c.is_alphabetic() && !c.is_ascii_hexdigit()) {
                return;
            }
            for word in value.split_whitespace().filter(|w| w.chars().all(|c| !c.is_alphabetic())) {
                let _ = Net::parse(word);
            }
        }
    }
    let lines = text.lines().count().max(1);
    let first = xinetd::parse(&text, "fuzz.conf", None);
    let second = xinetd::parse(&text, "fuzz.conf", None);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "two parses differ"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "two parses fail differently"),
        _ => panic!("one parse failed and the other did not"),
    }
    match first {
        Ok(config) => {
            let mut names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), config.services.len(), "two services share a name");
            let mut listens: Vec<_> = config.services.iter().map(|s| s.listen).filter(|l| l.addr.port() != 0).collect();
            let before = listens.len();
            listens.sort_by_key(|l| (l.addr, l.transport.name()));
            listens.dedup();
            assert_eq!(listens.len(), before, "two services share a listener");
            for s in &config.services {
                if let Kind::Exec(exec) = &s.kind {
                    assert!(!exec.argv.is_empty(), "exec service {} has no argv", s.name);
                }
            }
        }
        Err(e) => {
            assert!(e.file == "fuzz.conf" || e.file == "xinetd config", "error names {}", e.file);
            if let Some(line) = e.line {
                assert!((1..=lines).contains(&line), "error on line {line} of {lines}");
            }
        }
    }
}
