//! The node's service table, parsed once (from `warren.toml` or xinetd files) into types that
//! cannot be invalid: every check happens in [`crate::attrs`] before a [`Service`] exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::Resource;
use warren_models::Model;

use crate::access::Access;

/// Everything the node hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The enabled services, in file order.
    pub services: Vec<Service>,
    /// Where `warren status` finds the node, if anywhere.
    pub status: Option<StatusAddr>,
    /// Attributes parsed but not acted upon, each with its reason (`file:line: attr: why`).
    pub ignored: Vec<String>,
    /// Services present but disabled (`disable = yes`, or not in `enabled`).
    pub disabled: Vec<String>,
    /// Where every service registers (`registry = "ADDR"`, or by default the registry this node
    /// hosts, if it hosts one); `None` (`registry = "off"`): nowhere.
    pub registry: Option<RegistryLink>,
    /// How the node logs (`log_format`, `access_log`); read at start, kept by reloads.
    pub logging: Logging,
    /// Where `warren up` serves its dashboard, `/api/status`, `/events` and `/metrics`
    /// (`admin = "ADDR"`, default [`DEFAULT_ADMIN`]); `None` (`admin = "off"`): nowhere.
    pub admin: Option<SocketAddr>,
}

/// How the node logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logging {
    /// The format of the log on standard output.
    pub format: LogFormat,
    /// Where HTTP services write their access log; `None`: nowhere (the default).
    pub access_log: Option<LogTo>,
}

/// `log_format`: how each event of the log is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// A bare line, as the course's programs narrate.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target and fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?}: want text or json")),
        }
    }
}

/// Where a log goes: `-` is standard output, anything else a file appended to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// Standard output.
    Stdout,
    /// This file, created if missing and appended to.
    File(PathBuf),
}

impl std::str::FromStr for LogTo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("want a path, or - for standard output".into()),
            "-" => Ok(Self::Stdout),
            path => Ok(Self::File(path.into())),
        }
    }
}

/// The dashboard's default address: loopback, beside none of the embedded default's ports.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7080);

/// Where hosted services register, and for how long each lease lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryLink {
    /// The registry's address; `None` means the registry this node hosts.
    pub addr: Option<SocketAddr>,
    /// Each registration's lease; renewed at a third of it, so a node that dies leaves the
    /// registry within this long.
    pub ttl: Duration,
}

impl Default for RegistryLink {
    fn default() -> Self {
        Self { addr: None, ttl: Duration::from_secs(10) }
    }
}

/// The status endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusAddr {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A TCP port (loopback, unless configured otherwise).
    Tcp(SocketAddr),
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `socket_type = stream`, `protocol = tcp`.
    Tcp,
    /// `socket_type = dgram`, `protocol = udp`.
    Udp,
}

impl Transport {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Where a service listens. Two services never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listen {
    /// The transport.
    pub transport: Transport,
    /// The local address; port 0 picks a free port.
    pub addr: SocketAddr,
}

/// One hosted service.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// The service's id (xinetd's `id`, else its name): unique in a config.
    pub name: String,
    /// Where it listens.
    pub listen: Listen,
    /// What answers.
    pub kind: Kind,
    /// Rate and concurrency limits.
    pub limits: Limits,
    /// Who may connect, and when.
    pub access: Access,
    /// Files sent to clients.
    pub banners: Banners,
    /// What is logged for each connection.
    pub log: LogOptions,
    /// Socket options.
    pub socket: SocketFlags,
    /// The name it registers under when the node has a registry (`register = no`: none).
    pub register: Option<String>,
}

/// What answers a service's connections.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A program, inetd-style.
    Exec(Exec),
    /// A warren protocol under a server model, inside the node.
    Builtin(Builtin),
    /// The node relays each connection to another address (xinetd's `redirect`).
    Redirect(SocketAddr),
}

/// A program started per connection (`nowait`) or handed the listening socket (`wait`).
#[derive(Clone, Debug, PartialEq)]
pub struct Exec {
    /// The program's path.
    pub program: PathBuf,
    /// Its arguments, `argv[0]` included.
    pub argv: Vec<String>,
    /// inetd's `wait`: the child gets the listening socket and the node stops watching it.
    pub wait: bool,
    /// Whom it runs as; `None` keeps the node's own identity.
    pub user: Option<Credentials>,
    /// `env`: variables set in its environment.
    pub env: Vec<(String, String)>,
    /// `passenv`: the node's variables passed through.
    pub passenv: Vec<String>,
    /// nice, umask and rlimits.
    pub process: ProcessSettings,
    /// Opt-in isolation.
    pub sandbox: Option<Sandbox>,
}

/// A uid and gid to switch to before exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name, for `initgroups`.
    pub name: String,
    /// The uid.
    pub uid: u32,
    /// The gid (`group`, else the user's primary group).
    pub gid: u32,
    /// `groups = yes`: the user's supplementary groups; otherwise none.
    pub supplementary: bool,
}

/// Settings applied to the child before exec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessSettings {
    /// `nice`: added to the priority.
    pub nice: Option<i32>,
    /// `umask`.
    pub umask: Option<u32>,
    /// `rlimit_*`: each limit (soft and hard), `None` meaning unlimited.
    pub rlimits: Vec<(Resource, Option<u64>)>,
}

impl ProcessSettings {
    /// Whether nothing is to be changed: the child can then start with a vfork-style clone.
    pub fn is_empty(&self) -> bool {
        self.nice.is_none() && self.umask.is_none() && self.rlimits.is_empty()
    }
}

/// Isolation for an exec service's children (see `docs/sandbox.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// cgroup `memory.max` in bytes: beyond it the kernel kills the child.
    pub memory_max: Option<u64>,
    /// cgroup `pids.max`: processes and threads the child may have at once.
    pub pids_max: Option<u64>,
    /// New namespaces for the child.
    pub namespaces: Namespaces,
}

/// Which namespaces a sandboxed child gets of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Its own mount table (made private, so nothing it mounts leaks out).
    pub mount: bool,
    /// Its own process ids: it cannot see or signal the node's other processes.
    pub pid: bool,
    /// Its own network stack with no interfaces: it can use only the socket it was handed.
    pub net: bool,
    /// Its own user ids: root inside maps to the node's uid outside.
    pub user: bool,
}

/// A warren protocol hosted in the node.
#[derive(Clone, Debug, PartialEq)]
pub struct Builtin {
    /// The protocol.
    pub protocol: Protocol,
    /// The server model (an in-process one: `fork` and `prefork` need a process of their own).
    pub model: Model,
    /// Protocol and model settings.
    pub options: BuiltinOptions,
}

/// The protocols warren serves: hosted by the node (`builtin = …`) and by `warren serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 862.
    Echo,
    /// RFC 863.
    Discard,
    /// RFC 867.
    Daytime,
    /// RFC 868.
    Time,
    /// RFC 864.
    Chargen,
    /// The course's TimeServer.
    Timeserver,
    /// The course's PingPong.
    Pingpong,
    /// The course's chat server.
    Chat,
    /// Static files over HTTP/1.1.
    Http,
    /// The service registry (hosted through [`crate::Hooks::host`]: it lives outside this crate).
    Registry,
    /// The object server (hosted through [`crate::Hooks::host`], as the registry).
    Objects,
    /// A TCP relay to one backend.
    Relay,
    /// A hand-off front: hands each connection, with its first bytes, to another process.
    Handoff,
    /// Stevens' `oobrecv`: reports each connection's normal and urgent bytes.
    Oob,
    /// The cluster switch (hosted through [`crate::Hooks::host`], as the registry).
    Switch,
    /// The Wasm agent host (hosted through [`crate::Hooks::host`], as the registry).
    Agents,
}

impl Protocol {
    /// Every protocol: its name in configs and on the command line, and what it is.
    pub const ALL: [(Protocol, &'static str, &'static str); 16] = [
        (Protocol::Echo, "echo", "RFC 862, TCP or UDP"),
        (Protocol::Discard, "discard", "RFC 863, TCP or UDP"),
        (Protocol::Daytime, "daytime", "RFC 867, TCP or UDP"),
        (Protocol::Time, "time", "RFC 868, TCP or UDP"),
        (Protocol::Chargen, "chargen", "RFC 864, TCP or UDP"),
        (Protocol::Timeserver, "timeserver", "the course's TimeServer (answers, then makes a blocking call)"),
        (Protocol::Pingpong, "pingpong", "the course's PingPong, version 3"),
        (Protocol::Chat, "chat", "the course's chat server"),
        (Protocol::Http, "http", "HTTP/1.1 static files (and the course's one-line `GET /path` requests)"),
        (Protocol::Registry, "registry", "the service registry (`warren registry` on its own)"),
        (Protocol::Objects, "objects", "the object server (`warren objects serve` on its own)"),
        (Protocol::Relay, "relay", "a TCP relay to one backend, spliced both ways (needs backend)"),
        (
            Protocol::Handoff,
            "handoff",
            "hands each connection, with its first line or head, to another process (needs to)",
        ),
        (Protocol::Oob, "oob", "Stevens' oobrecv: logs normal and urgent bytes (models that arm urgent data)"),
        (Protocol::Switch, "switch", "the cluster switch (`warren switch` on its own; needs backend or backend_name)"),
        (Protocol::Agents, "agents", "the Wasm agent host: runs signed modules sent by `warren agents run`"),
    ];

    /// The name in configs.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(p, ..)| *p == self).map_or("?", |(_, n, _)| n)
    }

    /// The protocol called `name`.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Self::ALL.iter().find(|(_, n, _)| *n == name).map(|(p, ..)| *p)
    }

    /// Whether it has a datagram form.
    pub fn has_udp(self) -> bool {
        matches!(self, Protocol::Echo | Protocol::Discard | Protocol::Daytime | Protocol::Time | Protocol::Chargen)
    }
}

/// Settings of a builtin service; `None` means the protocol's or model's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuiltinOptions {
    /// `http`: the document root [default: the node's own site, see `crate::site`].
    pub root: Option<PathBuf>,
    /// `http`: serve names starting with a dot (hidden by default).
    pub dotfiles: bool,
    /// `http`: write a line per request to the access log (set when the node has one).
    pub access_log: bool,
    /// Model threads (`pool`, `event`, `hybrid`).
    pub threads: Option<usize>,
    /// Connections beyond this many are refused.
    pub max_conns: Option<usize>,
    /// Idle connections are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// `registry`, `objects`: the directory of its store.
    pub data: Option<PathBuf>,
    /// `registry`: also answer DNS (UDP and TCP) on this address.
    pub dns: Option<SocketAddr>,
    /// `registry`: also serve the HTTP/JSON API on this address; `objects`: the JSON front.
    pub api: Option<SocketAddr>,
    /// `relay`: where to.
    pub backend: Option<SocketAddr>,
    /// `handoff`: the hand-off socket connections go to (`@name` for the abstract namespace).
    pub to: Option<PathBuf>,
    /// `switch`: its settings as `warren switch` takes them, each key (a flag's name with `_`
    /// for `-`) with its words in file order; the switch itself checks their values.
    pub switch: Vec<(String, Vec<String>)>,
    /// `agents`: its settings (`trusted_keys`, `allow_unsigned`, `fuel`, …), each key with its
    /// words; the agent host checks their values.
    pub agents: Vec<(String, Vec<String>)>,
}

/// Rate and concurrency limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// At most this many children (or connections) at once.
    pub instances: Option<u32>,
    /// At most this many from one source address at once.
    pub per_source: Option<u32>,
    /// Above `rate` new connections in one second, stop accepting for `wait`, then carry on.
    pub cps: Option<Cps>,
    /// Refuse while the 1-minute load average is at or above this.
    pub max_load: Option<f64>,
}

/// xinetd's `cps = <rate> <wait>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cps {
    /// Connections per second allowed.
    pub rate: u32,
    /// How long accepting pauses once the rate is exceeded.
    pub wait: Duration,
}

/// Files sent to the client, their contents read at load time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Banners {
    /// `banner`: on every connection, granted or not.
    pub always: Option<Arc<[u8]>>,
    /// `banner_success`: when access is granted.
    pub success: Option<Arc<[u8]>>,
    /// `banner_fail`: when access is denied.
    pub fail: Option<Arc<[u8]>>,
}

/// `log_on_success` and `log_on_failure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// PID of the child.
    pub pid: bool,
    /// Remote address (both lists).
    pub host: bool,
    /// Exit status.
    pub exit: bool,
    /// How long the child ran.
    pub duration: bool,
    /// Bytes relayed (redirects).
    pub traffic: bool,
    /// Log refused connections at all (`log_on_failure` not empty).
    pub failure: bool,
    /// Log the attempt of refused connections.
    pub attempt: bool,
}

impl Default for LogOptions {
    /// `PID HOST EXIT DURATION` on success, `HOST ATTEMPT` on failure.
    fn default() -> Self {
        Self { pid: true, host: true, exit: true, duration: true, traffic: false, failure: true, attempt: true }
    }
}

/// Socket options (`flags`, `v6only`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketFlags {
    /// TCP_NODELAY on accepted connections.
    pub nodelay: bool,
    /// SO_KEEPALIVE on accepted connections.
    pub keepalive: bool,
    /// IPV6_V6ONLY on an IPv6 listener.
    pub v6only: Option<bool>,
}
