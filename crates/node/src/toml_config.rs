//! `warren.toml`: a `[[service]]` table per service whose keys are xinetd's attribute names
//! (plus warren's `builtin`, `model`, `root` …), and the embedded default.
//!
//! Values map onto xinetd's words: a string is split at spaces (but for paths), a number is one
//! word, an array's elements are words as they are, a bool is `yes`/`no`, and `env` may be a table. Every check then happens in [`crate::attrs`].

use std::path::PathBuf;

use toml::{Table, Value};

use crate::attrs::{Attrs, Format, Op};
use crate::config::{Config, StatusAddr};
use crate::load::{LoadError, Loaded};

/// The embedded default configuration: loopback HTTP, chat, pingpong and the classic services.
pub const DEFAULT: &str = include_str!("default.toml");

/// Parse `text` (read from `origin`, for messages).
pub fn parse(text: &str, origin: &str) -> Result<Config, LoadError> {
    let err = |line: Option<usize>, message: String| LoadError { file: origin.into(), line, message };
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        err(line, e.message().to_string())
    })?;
    let status = match table.remove("status") {
        None => Some(StatusAddr::Unix(default_status_path())),
        Some(Value::String(s)) => status_addr(&s).map_err(|m| err(None, m))?,
        Some(_) => return Err(err(None, "status: want a string".into())),
    };
    let services = match table.remove("service") {
        None => Vec::new(),
        Some(Value::Array(services)) => services,
        Some(_) => return Err(err(None, "service: want [[service]] tables".into())),
    };
    if let Some(key) = table.keys().next() {
        return Err(err(None, format!("unknown top-level key {key:?}; want status or [[service]]")));
    }
    let mut loaded = Loaded::default();
    for (i, service) in services.into_iter().enumerate() {
        let Value::Table(mut service) = service else {
            return Err(err(None, format!("service #{}: want a table", i + 1)));
        };
        let name = match service.remove("name") {
            Some(Value::String(name)) => name,
            _ => return Err(err(None, format!("service #{}: needs name = \"...\"", i + 1))),
        };
        let at = |m: String| err(None, format!("service {name:?}: {m}"));
        let mut attrs = Attrs::default();
        let mut ignored = Vec::new();
        for (key, value) in service {
            let words = words(&key, value).map_err(at)?;
            attrs.apply(&key, Op::Set, words, &mut ignored).map_err(at)?;
        }
        loaded.ignored.extend(ignored.into_iter().map(|m| format!("{origin}: service {name:?}: {m}")));
        loaded.add(&name, &attrs, &Attrs::default(), Format::Toml).map_err(at)?;
    }
    loaded.finish(status).map_err(|m| err(None, m))
}

/// Attributes whose string value is one path, spaces and all.
const PATHS: [&str; 5] = ["server", "banner", "banner_success", "banner_fail", "root"];

fn words(key: &str, value: Value) -> Result<Vec<String>, String> {
    let word = |v: Value| match v {
        Value::String(s) => Ok(s),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(if b { "yes" } else { "no" }.to_string()),
        _ => Err(format!("{key}: want strings, numbers or booleans")),
    };
    match value {
        Value::Array(items) => items.into_iter().map(word).collect(),
        Value::Table(env) if key == "env" => env.into_iter().map(|(k, v)| Ok(format!("{k}={}", word(v)?))).collect(),
        // A string is split into words as in xinetd (`redirect = "host port"`), except paths.
        Value::String(s) if !PATHS.contains(&key) => Ok(s.split_whitespace().map(String::from).collect()),
        other => Ok(vec![word(other)?]),
    }
}

/// `unix:/path`, `host:port` or `off`.
pub fn status_addr(text: &str) -> Result<Option<StatusAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    if let Some(path) = text.strip_prefix("unix:") {
        return Ok(Some(StatusAddr::Unix(path.into())));
    }
    text.parse()
        .map(|a| Some(StatusAddr::Tcp(a)))
        .map_err(|_| format!("status: want unix:/path, address:port or off, found {text:?}"))
}

/// `$XDG_RUNTIME_DIR/warren-node.sock`, else `/tmp/warren-node-<uid>.sock`: where `warren up`
/// serves its status and `warren status` looks by default.
pub fn default_status_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("warren-node.sock"),
        None => PathBuf::from(format!("/tmp/warren-node-{}.sock", nix::unistd::getuid())),
    }
}
