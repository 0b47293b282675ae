//! The one place attributes become a [`Service`]: both `warren.toml` keys and xinetd attributes
//! arrive here as words under xinetd's names, so one set of checks serves both formats.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use warren_models::Model;

mod values;

use self::values::{banner, count, cps, credentials, log_options, nets, rlimits, size, well_known_port};
use crate::access::{Access, TimeRange};
use crate::config::{
    Banners, Builtin, BuiltinOptions, Cps, Exec, Kind, Limits, Listen, Namespaces, ProcessSettings, Protocol, Sandbox,
    Service, SocketFlags, Transport,
};

/// How an attribute's value combines with one already set (from `defaults` or above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Set,
    /// `+=`
    Add,
    /// `-=`
    Remove,
}

/// How the node treats an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Meaning {
    /// Acted upon.
    Honoured,
    /// Parsed, reported as ignored with this reason.
    Ignored(&'static str),
}

/// Every attribute the node knows: xinetd's (xinetd.conf(5)), then warren's own.
const ATTRIBUTES: &[(&str, Meaning)] = &[
    ("id", Meaning::Honoured),
    ("type", Meaning::Honoured),
    ("flags", Meaning::Honoured),
    ("v6only", Meaning::Honoured),
    ("disable", Meaning::Honoured),
    ("socket_type", Meaning::Honoured),
    ("protocol", Meaning::Honoured),
    ("wait", Meaning::Honoured),
    ("user", Meaning::Honoured),
    ("group", Meaning::Honoured),
    ("groups", Meaning::Honoured),
    ("instances", Meaning::Honoured),
    ("per_source", Meaning::Honoured),
    ("cps", Meaning::Honoured),
    ("max_load", Meaning::Honoured),
    ("nice", Meaning::Honoured),
    ("server", Meaning::Honoured),
    ("server_args", Meaning::Honoured),
    ("libwrap", Meaning::Ignored("TCP wrappers are not consulted; use only_from and no_access")),
    ("only_from", Meaning::Honoured),
    ("no_access", Meaning::Honoured),
    ("access_times", Meaning::Honoured),
    ("log_type", Meaning::Ignored("the node logs through its structured log (standard output)")),
    ("log_on_success", Meaning::Honoured),
    ("log_on_failure", Meaning::Honoured),
    ("rpc_version", Meaning::Ignored("RPC services are not supported")),
    ("rpc_number", Meaning::Ignored("RPC services are not supported")),
    ("env", Meaning::Honoured),
    ("passenv", Meaning::Honoured),
    ("port", Meaning::Honoured),
    ("redirect", Meaning::Honoured),
    ("bind", Meaning::Honoured),
    ("interface", Meaning::Honoured),
    ("banner", Meaning::Honoured),
    ("banner_success", Meaning::Honoured),
    ("banner_fail", Meaning::Honoured),
    ("umask", Meaning::Honoured),
    ("enabled", Meaning::Honoured),
    ("disabled", Meaning::Honoured),
    ("rlimit_as", Meaning::Honoured),
    ("rlimit_cpu", Meaning::Honoured),
    ("rlimit_data", Meaning::Honoured),
    ("rlimit_rss", Meaning::Ignored("Linux has not enforced RLIMIT_RSS since 2.6; use sandbox_memory_max")),
    ("rlimit_stack", Meaning::Honoured),
    ("rlimit_files", Meaning::Honoured),
    ("deny_time", Meaning::Ignored("only SENSOR services use it, and the node has none")),
    ("mdns", Meaning::Ignored("mDNS registration exists only on macOS")),
    ("builtin", Meaning::Honoured),
    ("model", Meaning::Honoured),
    ("root", Meaning::Honoured),
    ("dotfiles", Meaning::Honoured),
    ("threads", Meaning::Honoured),
    ("max_conns", Meaning::Honoured),
    ("idle_timeout", Meaning::Honoured),
    ("data", Meaning::Honoured),
    ("dns", Meaning::Honoured),
    ("api", Meaning::Honoured),
    ("backend", Meaning::Honoured),
    ("to", Meaning::Honoured),
    ("backends_file", Meaning::Honoured),
    ("backend_name", Meaning::Honoured),
    ("registry", Meaning::Honoured),
    ("policy", Meaning::Honoured),
    ("mode", Meaning::Honoured),
    ("inter", Meaning::Honoured),
    ("rise", Meaning::Honoured),
    ("fall", Meaning::Honoured),
    ("no_check", Meaning::Honoured),
    ("eject_after", Meaning::Honoured),
    ("slow_start", Meaning::Honoured),
    ("connect_timeout", Meaning::Honoured),
    ("peek", Meaning::Honoured),
    ("route", Meaning::Honoured),
    ("server_timeout", Meaning::Honoured),
    ("client_timeout", Meaning::Honoured),
    ("retries", Meaning::Honoured),
    ("max_body", Meaning::Honoured),
    ("tunnel_timeout", Meaning::Honoured),
    ("register", Meaning::Honoured),
    ("trusted_keys", Meaning::Honoured),
    ("allow_unsigned", Meaning::Honoured),
    ("fuel", Meaning::Honoured),
    ("wall_ms", Meaning::Honoured),
    ("memory_mib", Meaning::Honoured),
    ("max_agents", Meaning::Honoured),
    ("modules", Meaning::Honoured),
    ("kv_buckets", Meaning::Honoured),
    ("files", Meaning::Honoured),
    ("files_dir", Meaning::Honoured),
    ("max_snapshot_mib", Meaning::Honoured),
    ("sandbox_memory_max", Meaning::Honoured),
    ("sandbox_pids_max", Meaning::Honoured),
    ("sandbox_namespaces", Meaning::Honoured),
];

/// What xinetd allows in `defaults`.
const DEFAULTS: &[&str] = &[
    "log_type",
    "bind",
    "interface",
    "per_source",
    "umask",
    "log_on_success",
    "log_on_failure",
    "only_from",
    "no_access",
    "passenv",
    "instances",
    "disabled",
    "enabled",
    "banner",
    "banner_success",
    "banner_fail",
    "groups",
    "cps",
    "max_load",
    "v6only",
];

/// The attributes of one section, as words, with the first line each was set on.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Attrs {
    /// Apply `name op words`. `ignored` collects `name: why` for attributes with no effect.
    pub fn apply(&mut self, name: &str, op: Op, words: Vec<String>, ignored: &mut Vec<String>) -> Result<(), String> {
        let (key, meaning) =
            ATTRIBUTES.iter().find(|(k, _)| *k == name).ok_or_else(|| format!("unknown attribute {name:?}"))?;
        if let Meaning::Ignored(why) = meaning {
            ignored.push(format!("{name}: ignored: {why}"));
        }
        if name.starts_with("log_on_") && words.iter().any(|w| w == "USERID") {
            ignored.push(format!("{name} USERID: ignored: ident (RFC 1413) lookups are not made"));
        }
        let list = self.values.entry(key).or_default();
        match op {
            Op::Set => *list = words,
            Op::Add => list.extend(words),
            Op::Remove => list.retain(|w| !words.contains(w)),
        }
        Ok(())
    }

    /// Check that every attribute set may appear in `defaults`.
    pub fn check_defaults(&self) -> Result<(), String> {
        match self.values.keys().find(|k| !DEFAULTS.contains(k)) {
            Some(k) => Err(format!("{k:?} cannot be set in defaults")),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&[String]> {
        self.values.get(name).map(Vec::as_slice)
    }

    fn one(&self, name: &str) -> Result<Option<&str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(words) => Err(format!("{name}: want one value, found {}", words.len())),
        }
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.one(name)?.map(|v| v.parse().map_err(|_| format!("{name}: cannot parse {v:?}"))).transpose()
    }

    fn yes(&self, name: &str) -> Result<Option<bool>, String> {
        match self.one(name)? {
            None => Ok(None),
            Some("yes" | "true") => Ok(Some(true)),
            Some("no" | "false") => Ok(Some(false)),
            Some(v) => Err(format!("{name}: want yes or no, found {v:?}")),
        }
    }

    fn words(&self, name: &str) -> &[String] {
        self.get(name).unwrap_or(&[])
    }
}

/// What a section turned into.
#[derive(Debug)]
pub enum Built {
    /// A service to host.
    Service(Box<Service>),
    /// A service that is present but disabled, by this id.
    Disabled(String),
    /// An `INTERNAL` service this node does not have (xinetd's `servers` and `services`), by
    /// this id: xinetd disables it and starts the rest, warren.toml refuses it.
    NoSuchInternal(String, String),
}

/// Where the attributes came from: the two formats differ in a few defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `warren.toml`: `user`, `wait`, `socket_type` optional.
    Toml,
    /// xinetd files: as xinetd requires, plus its default `cps = 50 10`.
    Xinetd,
}

/// Build the service `name` from its attributes merged over `defaults`.
pub fn build(name: &str, a: &Attrs, defaults: &Attrs, format: Format) -> Result<Built, String> {
    let id = a.one("id")?.unwrap_or(name).to_string();
    let types = a.words("type");
    let mut flags = a.words("flags").to_vec();
    let listed = |ids: &[String]| ids.contains(&id);
    if a.yes("disable")? == Some(true)
        || take_flag(&mut flags, "DISABLE")
        || defaults.get("enabled").is_some_and(|e| !listed(e))
        || listed(defaults.words("disabled"))
    {
        return Ok(Built::Disabled(id));
    }
    for t in types {
        match t.as_str() {
            "INTERNAL" | "UNLISTED" => {}
            "RPC" => return Err("type RPC: RPC services are not supported".into()),
            "TCPMUX" | "TCPMUXPLUS" => return Err(format!("type {t}: TCPMUX is not supported")),
            other => return Err(format!("type: unknown {other:?}")),
        }
    }
    let internal = types.iter().any(|t| t == "INTERNAL");
    let transport = transport(a, format)?;
    let socket = socket_flags(a, &mut flags)?;
    let ipv6 = take_flag(&mut flags, "IPv6");
    take_flag(&mut flags, "IPv4");
    let name_in_args = take_flag(&mut flags, "NAMEINARGS");
    for flag in &flags {
        match flag.as_str() {
            "REUSE" | "INTERCEPT" | "NORETRY" | "NOLIBWRAP" | "LABELED" => {}
            "IDONLY" => return Err("flags IDONLY: ident (RFC 1413) lookups are not made, so nobody would pass".into()),
            "SENSOR" => return Err("flags SENSOR: sensor services are not supported".into()),
            other => return Err(format!("flags: unknown {other:?}")),
        }
    }
    let port = match a.parse::<u16>("port")? {
        Some(port) => port,
        None if types.iter().any(|t| t == "UNLISTED") => return Err("an UNLISTED service needs a port".into()),
        None => well_known_port(name, transport)
            .ok_or(format!("{name}/{} is not in /etc/services: set port", transport.name()))?,
    };
    let bind = match a.one("bind")?.or(a.one("interface")?).or(defaults.one("bind")?) {
        Some(b) => b.parse::<IpAddr>().map_err(|_| format!("bind: not an address: {b:?}"))?,
        None if ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let listen = Listen { transport, addr: SocketAddr::new(bind, port) };
    let kind = if internal {
        let Some(protocol) = Protocol::from_name(name).filter(|p| p.has_udp()) else {
            return Ok(Built::NoSuchInternal(id, format!("no internal service {name:?}")));
        };
        Kind::Builtin(Builtin { protocol, model: Model::Event, options: BuiltinOptions::default() })
    } else if let Some(protocol) = a.one("builtin")? {
        builtin(a, protocol, transport)?
    } else if let Some(to) = a.get("redirect") {
        if transport == Transport::Udp {
            return Err("redirect: TCP only".into());
        }
        let target = to.join(" ");
        let (host, port) = to.split_first().filter(|(_, p)| p.len() == 1).ok_or("redirect: want <host> <port>")?;
        let port: u16 = port[0].parse().map_err(|_| format!("redirect: bad port in {target:?}"))?;
        let addr = (host.as_str(), port).to_socket_addrs().ok().and_then(|mut a| a.next());
        Kind::Redirect(addr.ok_or(format!("redirect: cannot resolve {target:?}"))?)
    } else {
        Kind::Exec(exec(a, name, transport, name_in_args, format)?)
    };
    let cps_default = (format == Format::Xinetd).then_some(Cps { rate: 50, wait: Duration::from_secs(10) });
    let limits = Limits {
        instances: count(a, "instances")?,
        per_source: count(a, "per_source")?,
        cps: cps(a)?.map_or(cps_default, |c| c),
        max_load: a.parse::<f64>("max_load")?.filter(|l| *l > 0.0),
    };
    let access = Access {
        only_from: a.get("only_from").map(nets).transpose()?,
        no_access: nets(a.words("no_access"))?,
        times: a.words("access_times").iter().map(|t| TimeRange::parse(t)).collect::<Result<_, _>>()?,
    };
    let banners = Banners {
        always: banner(a, "banner")?,
        success: banner(a, "banner_success")?,
        fail: banner(a, "banner_fail")?,
    };
    let register = register(a, &id)?;
    Ok(Built::Service(Box::new(Service {
        name: id,
        listen,
        kind,
        limits,
        access,
        banners,
        log: log_options(a)?,
        socket,
        register,
    })))
}

fn take_flag(flags: &mut Vec<String>, flag: &str) -> bool {
    let before = flags.len();
    flags.retain(|f| f != flag);
    flags.len() != before
}

fn transport(a: &Attrs, format: Format) -> Result<Transport, String> {
    let from_type = match a.one("socket_type")? {
        Some("stream") => Some(Transport::Tcp),
        Some("dgram") => Some(Transport::Udp),
        Some(t @ ("raw" | "seqpacket")) => return Err(format!("socket_type {t}: only stream and dgram are supported")),
        Some(t) => return Err(format!("socket_type: unknown {t:?}")),
        None if format == Format::Xinetd => return Err("socket_type is required".into()),
        None => None,
    };
    let from_protocol = match a.one("protocol")? {
        Some("tcp") => Some(Transport::Tcp),
        Some("udp") => Some(Transport::Udp),
        Some(p) => return Err(format!("protocol {p:?}: only tcp and udp are supported")),
        None => None,
    };
    match (from_type, from_protocol) {
        (Some(t), Some(p)) if t != p => Err("socket_type and protocol disagree".into()),
        (t, p) => Ok(t.or(p).unwrap_or(Transport::Tcp)),
    }
}

fn socket_flags(a: &Attrs, flags: &mut Vec<String>) -> Result<SocketFlags, String> {
    Ok(SocketFlags {
        nodelay: take_flag(flags, "NODELAY"),
        keepalive: take_flag(flags, "KEEPALIVE"),
        v6only: a.yes("v6only")?,
    })
}

fn builtin(a: &Attrs, protocol: &str, transport: Transport) -> Result<Kind, String> {
    let protocol = Protocol::from_name(protocol).ok_or(format!("builtin: unknown protocol {protocol:?}"))?;
    if transport == Transport::Udp && !protocol.has_udp() {
        return Err(format!("builtin {}: has no UDP form", protocol.name()));
    }
    let model = a.one("model")?.unwrap_or("event").parse::<Model>()?;
    if matches!(model, Model::Fork | Model::Prefork) {
        return Err(format!("model {model}: needs a process of its own; the node hosts in-process models"));
    }
    let mut options = BuiltinOptions {
        root: a.one("root")?.map(PathBuf::from),
        dotfiles: a.yes("dotfiles")?.unwrap_or(false),
        // Set by warren.toml's top-level `access_log`.
        access_log: false,
        threads: a.parse("threads")?,
        max_conns: a.parse("max_conns")?,
        idle_timeout: a.parse::<u64>("idle_timeout")?.map(Duration::from_secs),
        data: a.one("data")?.map(PathBuf::from),
        dns: address(a, "dns")?,
        api: address(a, "api")?,
        // The switch's `backend` is a list of backend lines, not one address.
        backend: if protocol == Protocol::Switch { None } else { address(a, "backend")? },
        to: a.one("to")?.map(PathBuf::from),
        switch: Vec::new(),
        agents: AGENTS_KEYS.iter().filter_map(|k| Some((k.to_string(), a.get(k)?.to_vec()))).collect(),
    };
    if let Some((key, _)) = options.agents.first().filter(|_| protocol != Protocol::Agents) {
        return Err(format!("{key}: only the agents builtin has it"));
    }
    let switch_keys = SWITCH_KEYS.iter().filter_map(|k| Some((k.to_string(), a.get(k)?.to_vec())));
    if protocol == Protocol::Switch {
        options.switch = switch_keys.collect();
        if model != Model::Event {
            return Err(format!("model {model}: the switch runs under event"));
        }
    } else if let Some((key, _)) = switch_keys.into_iter().find(|(k, _)| k != "backend") {
        return Err(format!("{key}: only the switch builtin has it"));
    }
    if protocol == Protocol::Switch && !options.switch.iter().any(|(k, _)| BACKEND_SOURCES.contains(&k.as_str())) {
        return Err("builtin switch: needs backend, backends_file or backend_name".into());
    }
    let needs =
        [(Protocol::Relay, "backend", options.backend.is_some()), (Protocol::Handoff, "to", options.to.is_some())];
    if options.dotfiles && protocol != Protocol::Http {
        return Err("dotfiles: only the http builtin has it".into());
    }
    if let Some((_, key, _)) = needs.into_iter().find(|(p, _, set)| *p == protocol && !set) {
        return Err(format!("builtin {}: needs {key}", protocol.name()));
    }
    let stores = [Protocol::Registry, Protocol::Objects];
    let store_only = [
        ("data", options.data.is_some(), &stores[..]),
        ("api", options.api.is_some(), &stores[..]),
        ("dns", options.dns.is_some(), &stores[..1]),
    ];
    if let Some((key, _, owners)) = store_only.iter().find(|(_, set, owners)| *set && !owners.contains(&protocol)) {
        let names: Vec<_> = owners.iter().map(|p| p.name()).collect();
        let has = if names.len() > 1 { "builtins have it" } else { "builtin has it" };
        return Err(format!("{key}: only the {} {has}", names.join(" and ")));
    }
    Ok(Kind::Builtin(Builtin { protocol, model, options }))
}

/// The switch's keys: `warren switch`'s flags, `_` for `-`, checked by the switch itself.
const SWITCH_KEYS: [&str; 20] = [
    "backend",
    "backends_file",
    "backend_name",
    "registry",
    "policy",
    "mode",
    "inter",
    "rise",
    "fall",
    "no_check",
    "eject_after",
    "slow_start",
    "connect_timeout",
    "peek",
    "route",
    "server_timeout",
    "client_timeout",
    "retries",
    "max_body",
    "tunnel_timeout",
];

/// The agent host's keys, checked by the host itself (docs/node.md).
const AGENTS_KEYS: [&str; 11] = [
    "trusted_keys",
    "allow_unsigned",
    "fuel",
    "wall_ms",
    "memory_mib",
    "max_agents",
    "modules",
    "kv_buckets",
    "files",
    "files_dir",
    "max_snapshot_mib",
];

/// Where a switch's backends come from; it needs at least one.
const BACKEND_SOURCES: [&str; 3] = ["backend", "backends_file", "backend_name"];

/// `register = yes | no | NAME`: the name to register under (yes, the default, is the id).
fn register(a: &Attrs, id: &str) -> Result<Option<String>, String> {
    match a.one("register")? {
        None | Some("yes") => Ok(Some(id.to_string())),
        Some("no") => Ok(None),
        Some(name) => Ok(Some(name.to_string())),
    }
}

/// An `address:port` attribute.
fn address(a: &Attrs, name: &str) -> Result<Option<SocketAddr>, String> {
    a.one(name)?.map(|v| v.parse().map_err(|_| format!("{name}: want address:port, found {v:?}"))).transpose()
}

fn exec(a: &Attrs, name: &str, transport: Transport, name_in_args: bool, format: Format) -> Result<Exec, String> {
    let program = PathBuf::from(a.one("server")?.ok_or("server is required (or type INTERNAL, redirect, builtin)")?);
    let wait = match a.yes("wait")? {
        Some(w) => w,
        None if format == Format::Xinetd => return Err("wait is required".into()),
        None => false,
    };
    if transport == Transport::Udp && !wait {
        return Err("a dgram exec service must be wait = yes: the program reads the datagrams itself".into());
    }
    let args = a.words("server_args");
    let argv = if name_in_args {
        args.to_vec()
    } else {
        let zero = program.file_name().map_or(name.into(), |f| f.to_string_lossy().into_owned());
        std::iter::once(zero).chain(args.iter().cloned()).collect()
    };
    if argv.is_empty() {
        return Err("NAMEINARGS: server_args must start with argv[0]".into());
    }
    let user = match a.one("user")? {
        Some(user) => Some(credentials(user, a.one("group")?, a.yes("groups")?.unwrap_or(false))?),
        None if format == Format::Xinetd => return Err("user is required".into()),
        None if a.get("group").is_some() => return Err("group needs user".into()),
        None => None,
    };
    let env = a
        .words("env")
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or(format!("env: want NAME=value, found {kv:?}"))
        })
        .collect::<Result<_, _>>()?;
    let process = ProcessSettings {
        nice: a.parse::<i32>("nice")?.map(|n| n.clamp(-20, 19)),
        umask: a
            .one("umask")?
            .map(|u| u32::from_str_radix(u, 8).ok().filter(|u| *u <= 0o777).ok_or(format!("umask: not octal: {u:?}")))
            .transpose()?,
        rlimits: rlimits(a)?,
    };
    let memory_max = a.one("sandbox_memory_max")?.map(size).transpose()?.flatten();
    let namespaces = a.words("sandbox_namespaces").iter().try_fold(Namespaces::default(), |mut ns, n| {
        match n.as_str() {
            "mount" => ns.mount = true,
            "pid" => ns.pid = true,
            "net" => ns.net = true,
            "user" => ns.user = true,
            other => return Err(format!("sandbox_namespaces: unknown {other:?}; want mount, pid, net, user")),
        }
        Ok(ns)
    })?;
    let sandbox = Sandbox { memory_max, pids_max: a.parse("sandbox_pids_max")?, namespaces };
    let sandbox = (sandbox != Sandbox::default()).then_some(sandbox);
    Ok(Exec { program, argv, wait, user, env, passenv: a.words("passenv").to_vec(), process, sandbox })
}
