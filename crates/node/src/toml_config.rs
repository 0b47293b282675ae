//! `warren.toml`: a `[[service]]` table per service whose keys are xinetd's attribute names
//! (plus warren's `builtin`, `model`, `root` …), and the embedded default.
//!
//! Values map onto xinetd's words: a string is split at spaces (but for paths), a number is one
//! word, an array's elements are words as they are, a bool is `yes`/`no`, and `env` may be a table. Every check then happens in [`crate::attrs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::attrs::{Attrs, Format, Op};
use crate::config::{Config, Kind, Logging, Protocol, RegistryLink, StatusAddr};
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
    let registry = match table.remove("registry") {
        None => None,
        Some(Value::String(s)) => Some(registry_addr(&s).map_err(|m| err(None, m))?),
        Some(_) => return Err(err(None, "registry: want \"address:port\" or \"off\"".into())),
    };
    let ttl = match table.remove("registry_ttl") {
        None => None,
        Some(Value::Integer(secs)) if secs > 0 => Some(Duration::from_secs(secs as u64)),
        Some(_) => return Err(err(None, "registry_ttl: want a positive number of seconds".into())),
    };
    let logging = logging(&mut table).map_err(|m| err(None, m))?;
    let admin = match table.remove("admin") {
        None => Some(crate::config::DEFAULT_ADMIN),
        Some(Value::String(s)) => admin_addr(&s).map_err(|m| err(None, m))?,
        Some(_) => return Err(err(None, "admin: want \"address:port\" or \"off\"".into())),
    };
    if let Some(key) = table.keys().next() {
        return Err(err(
            None,
            format!(
                "unknown top-level key {key:?}; want status, registry, registry_ttl, admin, log_format, access_log or [[service]]"
            ),
        ));
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
    let mut config = loaded.finish(status).map_err(|m| err(None, m))?;
    if let Some(addr) = registry {
        config.registry = addr.map(|addr| RegistryLink { addr: Some(addr), ..RegistryLink::default() });
    }
    if let (Some(link), Some(ttl)) = (&mut config.registry, ttl) {
        link.ttl = ttl;
    }
    if logging.access_log.is_some() {
        for service in &mut config.services {
            if let Kind::Builtin(b) = &mut service.kind
                && b.protocol == Protocol::Http
            {
                b.options.access_log = true;
            }
        }
    }
    config.logging = logging;
    config.admin = admin;
    Ok(config)
}

/// `log_format = "text" | "json"` and `access_log = "PATH" | "-" | "off"`.
fn logging(table: &mut Table) -> Result<Logging, String> {
    let mut string = |key: &str| match table.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key}: want a string")),
    };
    let format = string("log_format")?.map(|s| s.parse()).transpose()?.unwrap_or_default();
    let access_log = match string("access_log")?.as_deref() {
        None | Some("off") => None,
        Some(to) => Some(to.parse().map_err(|m| format!("access_log: {m}"))?),
    };
    Ok(Logging { format, access_log })
}

/// `address:port`, or `off` (`None`): where `warren up` serves its dashboard and metrics.
pub fn admin_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| format!("admin: want address:port or off, found {text:?}"))
}

/// `address:port`, or `off` (`None`): where hosted services register.
pub fn registry_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| format!("registry: want address:port or off, found {text:?}"))
}

/// Attributes whose string value is one path, spaces and all.
const PATHS: [&str; 11] = [
    "server",
    "banner",
    "banner_success",
    "banner_fail",
    "root",
    "data",
    "to",
    "backends_file",
    "trusted_keys",
    "modules",
    "files_dir",
];

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

/// `$XDG_RUNTIME_DIR/warren-node.sock`, else `$TMPDIR/warren-<uid>/node.sock` (`/tmp` without
/// `$TMPDIR`): where `warren up`
/// serves its status and `warren status` looks by default. The fallback's directory is made
/// and checked by [`private_socket_dir`] before use, so that nobody else can squat the path.
pub fn default_status_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("warren-node.sock"),
        None => fallback_socket_dir().join("node.sock"),
    }
}

/// `$TMPDIR/warren-<uid>`: the directory of the default status socket without `$XDG_RUNTIME_DIR`.
fn fallback_socket_dir() -> PathBuf {
    std::env::temp_dir().join(format!("warren-{}", nix::unistd::getuid()))
}

/// Where `socket` lies in the fallback directory, create that directory (mode 0700) and check,
/// as tmux does for `$TMUX_TMPDIR/tmux-<uid>`, that it is a real directory (not a link), owned by this
/// user and closed to everyone else; any other socket path is the operator's choice and is left
/// alone. Without the check, another user could create the directory first and answer (or
/// listen) in the node's place.
pub fn private_socket_dir(socket: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let dir = fallback_socket_dir();
    if socket.parent() != Some(dir.as_path()) {
        return Ok(());
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    let unsafe_because = if !meta.is_dir() {
        Some("it is not a directory")
    } else if meta.uid() != nix::unistd::getuid().as_raw() {
        Some("another user owns it")
    } else if meta.mode() & 0o077 != 0 {
        Some("others have access to it (want mode 0700)")
    } else {
        None
    };
    match unsafe_because {
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing status directory {}: {why}", dir.display()),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse;
    use crate::config::{Kind, RegistryLink};

    const ECHO: &str = "[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n";

    #[test]
    fn registry_link_defaults_to_a_hosted_registry_and_can_be_set_or_turned_off() {
        let config = parse(ECHO, "t").unwrap();
        assert_eq!(config.registry, Some(RegistryLink::default()));
        assert_eq!(config.services[0].register.as_deref(), Some("echo"), "registers under its name by default");

        let config = parse(&format!("registry = \"127.0.0.1:7390\"\nregistry_ttl = 30\n{ECHO}"), "t").unwrap();
        let link = config.registry.unwrap();
        assert_eq!((link.addr, link.ttl), (Some("127.0.0.1:7390".parse().unwrap()), Duration::from_secs(30)));

        assert_eq!(parse(&format!("registry = \"off\"\n{ECHO}"), "t").unwrap().registry, None);
        let bad = parse(&format!("registry = \"nowhere\"\n{ECHO}"), "t").unwrap_err().to_string();
        assert!(bad.contains("registry: want address:port or off"), "{bad}");
        assert!(parse(&format!("registry_ttl = 0\n{ECHO}"), "t").is_err());
    }

    #[test]
    fn admin_defaults_to_loopback_and_can_be_set_or_turned_off() {
        assert_eq!(parse(ECHO, "t").unwrap().admin, Some(crate::config::DEFAULT_ADMIN));
        assert!(crate::config::DEFAULT_ADMIN.ip().is_loopback());
        let config = parse(&format!("admin = \"127.0.0.1:0\"\n{ECHO}"), "t").unwrap();
        assert_eq!(config.admin, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse(&format!("admin = \"off\"\n{ECHO}"), "t").unwrap().admin, None);
        let bad = parse(&format!("admin = \"everywhere\"\n{ECHO}"), "t").unwrap_err().to_string();
        assert!(bad.contains("admin: want address:port or off"), "{bad}");
    }

    #[test]
    fn register_names_or_excludes_a_service() {
        let config = parse(&format!("{ECHO}register = \"greeter\"\n"), "t").unwrap();
        assert_eq!(config.services[0].register.as_deref(), Some("greeter"));
        let config = parse(&format!("{ECHO}register = false\n"), "t").unwrap();
        assert_eq!(config.services[0].register, None);
    }

    #[test]
    fn the_objects_builtin_takes_a_store_and_a_json_front_but_no_dns() {
        let text = "[[service]]\nname = \"o\"\nbuiltin = \"objects\"\nport = 0\ndata = \"/var/lib/objects\"\n\
                    api = \"127.0.0.1:7402\"\n";
        let config = parse(text, "t").unwrap();
        let Kind::Builtin(builtin) = &config.services[0].kind else { panic!("a builtin") };
        assert_eq!(builtin.protocol, crate::config::Protocol::Objects);
        assert_eq!(builtin.options.api, Some("127.0.0.1:7402".parse().unwrap()));
        let wrong = parse(&format!("{text}dns = \"127.0.0.1:5300\"\n"), "t").unwrap_err().to_string();
        assert!(wrong.contains("dns: only the registry builtin has it"), "{wrong}");
        let wrong = parse(&format!("{ECHO}data = \"/x\"\n"), "t").unwrap_err().to_string();
        assert!(wrong.contains("data: only the registry and objects builtins have it"), "{wrong}");
    }

    #[test]
    fn registry_options_belong_to_the_registry_builtin_only() {
        let text = "[[service]]\nname = \"r\"\nbuiltin = \"registry\"\nport = 0\ndata = \"/var/lib/my registry\"\n\
                    dns = \"127.0.0.1:5300\"\napi = \"127.0.0.1:7401\"\n";
        let config = parse(text, "t").unwrap();
        let Kind::Builtin(builtin) = &config.services[0].kind else { panic!("a builtin") };
        assert_eq!(builtin.options.data.as_deref(), Some(std::path::Path::new("/var/lib/my registry")));
        assert_eq!(builtin.options.dns, Some("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(builtin.options.api, Some("127.0.0.1:7401".parse().unwrap()));
        let wrong = parse(&format!("{ECHO}dns = \"127.0.0.1:5300\"\n"), "t").unwrap_err().to_string();
        assert!(wrong.contains("dns: only the registry builtin has it"), "{wrong}");
        let bad = parse(&text.replace("127.0.0.1:5300", "localhost:53"), "t").unwrap_err().to_string();
        assert!(bad.contains("dns: want address:port"), "{bad}");
    }

    #[test]
    fn the_embedded_default_hosts_the_registry_with_dns_and_api() {
        let config = parse(super::DEFAULT, "default").unwrap();
        let registry = config.services.iter().find(|s| s.name == "registry").expect("hosted by default");
        let Kind::Builtin(builtin) = &registry.kind else { panic!("a builtin") };
        assert!(builtin.options.dns.is_some() && builtin.options.api.is_some());
        assert!(config.disabled.is_empty(), "nothing in the default is disabled: {:?}", config.disabled);
    }
}
