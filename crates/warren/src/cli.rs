//! The command line: every subcommand and flag, parsed once into these types.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use warren_models::Model;
pub use warren_node::config::Protocol;

/// warren hosts, finds, balances and moves server processes.
///
/// Every server runs under one of eight server models, chosen at run time:
///
///   iterative  one connection at a time, blocking; the next client waits in the backlog
///   thread     a kernel thread per connection (--max N waits before accept while N are active)
///   pool       N threads serve any number of connections; a bounded queue refuses when full
///   fork       a process per connection; shared state in a hub process over a Unix socket
///   prefork    N worker processes accept on one listener; shared state in a hub process
///   event      one thread, epoll, each connection a state machine (--helpers N run its blocking calls)
///   green      user-space tasks on one kernel thread: one blocking call stalls every connection
///   hybrid     M:N tasks on a work-stealing pool of kernel threads (light-weight processes)
#[derive(Debug, Parser)]
#[command(name = "warren", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How servers write their log: text (bare lines) or json (one object per line); for
    /// `warren up`, over the config's `log_format`. WARREN_LOG or RUST_LOG sets the level.
    #[arg(long, global = true, value_name = "text|json", value_parser = crate::logging::parse_format)]
    pub log_format: Option<crate::logging::LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The node: host every service of warren.toml (or xinetd's files, or the embedded default).
    Up(crate::up::UpArgs),
    /// What a running node (`warren up`) serves: services, listeners, instances, spawn rates.
    Status(crate::up::StatusArgs),
    /// Serve a protocol under a server model.
    Serve(Box<ServeArgs>),
    /// Run every classic server on loopback, each under a different model, and try each client.
    Demo(DemoArgs),
    /// The course's PingPong: `warren pingpong <client|server> <host> <port>`.
    Pingpong(PingpongArgs),
    /// The course's LargerHttpd: `warren largerhttpd <port> <maxthreads>` serves the current
    /// directory under the event model with a pool of helper threads.
    Largerhttpd(LargerhttpdArgs),
    /// The course's chat server: `warren chatserver -p <port> -d <0|1>`.
    Chatserver(ChatserverArgs),
    /// Interactive chat client with line editing; `/connect <host> [port]` inside.
    Chat {
        /// Server to connect to at once.
        host: Option<String>,
        /// Its port.
        port: Option<u16>,
        /// Give up on a server (here or in `/connect`) that has not connected and welcomed
        /// the client within this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        timeout: std::time::Duration,
    },
    /// The course's TimeServer: sends the date, then blocks for --delay (default 4 s).
    Timeserver(TimeserverArgs),
    /// The course's TimeClient: prints `Time on host <host> is <date>`; reads a serialized
    /// java.util.Date (the Java TimeServer), a ctime line (the C one) or a daytime line.
    Timeclient(TimeclientArgs),
    /// Stevens' urgent-data demonstration: `warren oob send HOST PORT`, `warren oob recv PORT`.
    Oob(crate::oob_cmd::OobArgs),
    /// Echo client (RFC 862): sends standard input, prints what comes back.
    Echo(ClientArgs),
    /// Discard client (RFC 863): sends standard input, prints nothing.
    Discard(ClientArgs),
    /// Daytime client (RFC 867): prints the server's date line.
    Daytime(ClientArgs),
    /// Time client (RFC 868): prints the server's time, decoded.
    Time(ClientArgs),
    #[command(flatten)]
    Registry(crate::registry_cmd::RegistryCommand),
    /// The stateful file server and its clients: `warren files serve --root DIR`, `get`, `put`, ...
    Files(crate::files_cmd::FilesArgs),
    /// The object server and its administration: `warren objects serve`, `add`, `rm`, `ls`, `classes`.
    Objects(crate::objects_cmd::ObjectsArgs),
    /// Call an object's method: `warren call HelloServer sayHello` (arguments as JSON values).
    Call(crate::objects_cmd::CallArgs),
    /// The cluster switch: `warren switch --listen ADDR --backend ADDR… --policy P --mode relay|handoff|http`.
    Switch(crate::switch_cmd::SwitchArgs),
    /// Wasm agents: `warren agents run NODE MODULE [ARGS…]`, `fetch NODE HASH -o FILE`, `keygen`, `sign`.
    Agents(crate::agents_cmd::AgentsArgs),
    /// Shell completions, generated from this command line: `warren completions bash`.
    Completions(crate::manual::CompletionsArgs),
    /// Man pages, generated from this command line: `warren man --out DIR`.
    Man(crate::manual::ManArgs),
    /// Measure and compare.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The chapter's table of server models, measured.
    Models(warren_bench::ModelsArgs),
    /// warren's HTTP server under each model against nginx, with wrk.
    Http(warren_bench::HttpArgs),
    /// Cancelling a huge upload out of band: control endpoint and TCP urgent data, latency.
    Oob(warren_bench::OobArgs),
    /// Connections per second when each starts a program: warren's node, xinetd and tcpserver.
    Superd(warren_bench::SuperdArgs),
    /// The registry's embedded store against etcd, and its DNS under dnsperf.
    Registry(warren_bench::RegistryArgs),
    /// The registry's DNS beside Knot DNS and BIND 9 under dnsperf, per server CPU-second.
    Dns(warren_bench::DnsArgs),
    /// Mixed clients against one `warren up` for minutes: are its memory and descriptors flat?
    Soak(warren_bench::SoakArgs),
    /// Remote objects: unary calls against tonic (gRPC), hedging over a stalling replica, failover.
    Rpc(warren_bench::RpcArgs),
    /// Strong mobility between two nodes: hops of 64 KiB to 64 MiB, snapshot sizes, safe points.
    Migrate(warren_bench::MigrateArgs),
    /// The cluster switch against HAProxy and against no switch: relay, http and hand-off.
    Switch(warren_bench::SwitchArgs),
    /// One HTML page with the latest table and chart of every bench, to open offline.
    Report(warren_bench::ReportArgs),
    /// A recorded `bench http` or `bench models` table drawn again as its SVG chart.
    Chart(warren_bench::ChartArgs),
    /// tonic's hello-world server, which `warren bench rpc` starts as its own process.
    #[command(hide = true)]
    TonicHello(warren_bench::TonicHelloArgs),
    /// A HelloServer that stalls on a share of its calls, which `warren bench rpc` starts.
    #[command(hide = true)]
    RpcReplica(warren_bench::ReplicaArgs),
}

/// Each model in a sentence, for `--help`.
const MODELS_HELP: &str = "Server model, one of:
  iterative  one connection at a time, blocking; the next client waits in the listen backlog
  thread     a kernel thread per connection; --max N waits before accept while N are active
  pool       --threads N kernel threads serve any number of connections; a bounded --queue refuses when full
  fork       a process per connection; shared state in a hub process over a Unix socket
  prefork    --processes N worker processes accept on one shared listener; shared state in a hub process
  event      one thread, epoll, each connection a state machine; --helpers N threads run its blocking calls
  green      user-space tasks on one kernel thread: one blocking call stalls every connection
  hybrid     M:N tasks over a work-stealing pool of --threads kernel threads (light-weight processes)";

/// The protocols `warren serve` knows: the node's table, each with its one-line summary.
fn protocol_parser() -> impl clap::builder::TypedValueParser<Value = Protocol> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = Protocol::ALL.iter().map(|(_, name, what)| PossibleValue::new(*name).help(*what));
    PossibleValuesParser::new(values).map(|name| Protocol::from_name(&name).expect("one of the possible values"))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The protocol to serve.
    #[arg(value_parser = protocol_parser())]
    pub protocol: Protocol,
    #[command(flatten)]
    pub server: ServerFlags,
}

/// Flags shared by every server command.
#[derive(Clone, Debug, Args)]
pub struct ServerFlags {
    /// Server model: iterative, thread, pool, fork, prefork, event, green or hybrid.
    #[arg(long, short = 'm', default_value = "thread", long_help = MODELS_HELP)]
    pub model: Model,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, short = 'l', default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve datagrams (echo, daytime, time) instead of a stream.
    #[arg(long)]
    pub udp: bool,
    /// --udp: answers a second per source address once its burst is spent; 0 turns the limit
    /// off. Datagrams from privileged source ports (below 1024) or the service's own port are
    /// never answered.
    #[arg(long, default_value_t = warren_models::udp::SourceRate::default().per_second)]
    pub udp_rate: u32,
    /// --udp: answers a quiet source address may get at once.
    #[arg(long, default_value_t = warren_models::udp::SourceRate::default().burst)]
    pub udp_burst: u32,
    /// pool: worker threads [default: 4]; hybrid: runtime threads [default: one per core];
    /// event: the same as --helpers.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// event, green, hybrid: helper threads that run blocking calls (file opens, fsync, the
    /// timeserver's delay) off the loop; 0 makes them on the loop, so that one blocking call
    /// stalls every connection (the chapter's lesson).
    #[arg(long, default_value_t = 4)]
    pub helpers: usize,
    /// prefork: worker processes.
    #[arg(long, short = 'P', default_value_t = 4)]
    pub processes: usize,
    /// thread, fork: stop accepting while this many connections are active.
    #[arg(long)]
    pub max: Option<usize>,
    /// Refuse connections beyond this many, with the protocol's refusal [default: 10000; fork: 512].
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// pool: ready connections that may wait for a worker; new ones are refused when it is full.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// Exit after this long without activity (e.g. 3m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_exit: Option<Duration>,
    /// Close a connection idle this long [default: 5m; http: 75s, nginx's keepalive_timeout].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Close a connection that takes this long to finish a request (slow clients).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub read_timeout: Duration,
    /// Give up on a peer that reads nothing for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub write_timeout: Duration,
    /// Longest request line or frame, in bytes; http: longer lines get 414 [default: 4096;
    /// http: 8192].
    #[arg(long)]
    pub max_request: Option<usize>,
    /// http: the most bytes of header fields in one request; more get 431.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// http: the most header fields in one request; more get 431.
    #[arg(long, default_value_t = 64)]
    pub max_headers: usize,
    /// timeserver: the blocking call's length; pingpong: the pause before each hit.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// pingpong: end each game after this many hits by the server.
    #[arg(long)]
    pub hits: Option<u64>,
    /// http: the document root.
    #[arg(long, default_value = ".")]
    pub root: std::path::PathBuf,
    /// http: list directories that have no index.html.
    #[arg(long)]
    pub listing: bool,
    /// http: follow symlinks that lead outside the root (by default they get 403).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// http: serve and list names starting with a dot (by default `/.git/…`, `/.env` get 404).
    #[arg(long)]
    pub dotfiles: bool,
    /// http: log every request as nginx's `combined` format does, to PATH (appended to) or,
    /// with no PATH or `-`, to standard output.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-", value_parser = crate::logging::parse_to)]
    pub access_log: Option<crate::logging::LogTo>,
    /// http: the path of the Prometheus metrics page, or "off"; a file of that name in the root
    /// is not served.
    #[arg(long, value_name = "PATH", default_value = "/metrics", value_parser = metrics_path)]
    pub metrics: String,
    /// http: the /visits cookie-signing key (32 bytes, raw or as 64 hex digits); created with
    /// mode 0600 if missing. Keep it to keep cookie counts across restarts. [default:
    /// $XDG_STATE_HOME/warren/cookie.key, else ~/.local/state/warren/cookie.key]
    #[arg(long)]
    pub cookie_key_file: Option<std::path::PathBuf>,
    /// http: how long a /visits session lives after its last use.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub session_ttl: Duration,
    /// http: the most /visits sessions held; the least recently used go first.
    #[arg(long, default_value_t = 10_000)]
    pub max_sessions: usize,
    /// relay: the backend every connection is relayed to.
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    /// handoff: the hand-off socket each connection goes to (a path, or @name for the abstract
    /// namespace), once its first line (or, with --peek head, its request head) is read.
    #[arg(long)]
    pub to: Option<std::path::PathBuf>,
    /// handoff: read the first line, or a whole HTTP request head, before handing over.
    #[arg(long, value_parser = ["line", "head"], default_value = "line")]
    pub peek: String,
    /// Serve connections handed over on this hand-off socket (a path, or @name) instead of
    /// listening on --listen: the receiving side of `warren serve handoff`.
    #[arg(long)]
    pub handoff_listen: Option<std::path::PathBuf>,
    /// Log level: 0 errors only, 1 every event (the default shows the protocol's narration).
    #[arg(long, short = 'd')]
    pub debug: Option<u8>,
}

#[derive(Debug, Args)]
pub struct PingpongArgs {
    /// `client` or `server`.
    #[arg(value_parser = ["client", "server"])]
    pub role: String,
    /// Server host; the server listens on its address unless --listen says otherwise.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Pause before each of this side's hits (e.g. 500ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub delay: Duration,
    /// End the game after this many hits by this side.
    #[arg(long)]
    pub hits: Option<u64>,
    /// server: the model [default: thread, the course's version 3].
    #[arg(long, short = 'm', default_value = "thread")]
    pub model: Model,
    /// server: worker threads (pool, event, hybrid).
    #[arg(long, short = 't', default_value_t = 4)]
    pub threads: usize,
    /// server: worker processes (prefork).
    #[arg(long, short = 'P', default_value_t = 4)]
    pub processes: usize,
    /// server: the address to listen on [default: the host's address]; 0.0.0.0 (or ::) for
    /// every interface, so that clients on other machines reach it.
    #[arg(long, visible_alias = "bind")]
    pub listen: Option<std::net::IpAddr>,
    /// client: give up on a server that has not connected and answered the hello within this
    /// long (a peer that is not a pingpong server).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct LargerhttpdArgs {
    /// Port to listen on (loopback unless --listen says otherwise).
    pub port: u16,
    /// Helper threads for the event loop's blocking work.
    pub maxthreads: usize,
    /// Address to listen on: loopback by default; 0.0.0.0 (or ::) for every interface, so that
    /// clients on other machines (a VM, a container) reach the server.
    #[arg(long, visible_alias = "bind", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,
}

#[derive(Debug, Args)]
pub struct ChatserverArgs {
    /// Port to listen on.
    #[arg(short = 'p', long)]
    pub port: u16,
    /// Debug level: 0 errors only, 1 every event.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub debug: u8,
    /// Address to listen on: loopback by default; 0.0.0.0 (or ::) for every interface, so that
    /// clients on other machines (a VM, a container) reach the server.
    #[arg(long, visible_alias = "bind", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,
    /// Server model [default: pool with 4 threads, any number of clients].
    #[arg(long, short = 'm', default_value = "pool")]
    pub model: Model,
    /// Threads (pool, event, hybrid).
    #[arg(long, short = 't', default_value_t = 4)]
    pub threads: usize,
    /// Processes (prefork).
    #[arg(long, short = 'P', default_value_t = 4)]
    pub processes: usize,
    /// Shut down after this long without activity.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    pub idle_exit: Duration,
}

#[derive(Debug, Args)]
pub struct TimeserverArgs {
    /// Port to listen on.
    #[arg(default_value_t = 5005)]
    pub port: u16,
    /// Address to listen on: loopback by default; 0.0.0.0 (or ::) for every interface, so that
    /// clients on other machines (a VM, a container) reach the server.
    #[arg(long, visible_alias = "bind", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,
    /// The blocking call after each answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
    pub delay: Duration,
    /// The date's wire form: java (a serialized java.util.Date, as the course's Java
    /// TimeServer), ctime (`"%.24s\r\n"` in local time, as its C timeserver.c) or text (the
    /// daytime line).
    #[arg(long, default_value = "java")]
    pub format: warren_proto::timeserver::TimeFormat,
    /// Server model [default: iterative, the course's single-threaded TimeServer].
    #[arg(long, short = 'm', default_value = "iterative")]
    pub model: Model,
}

#[derive(Debug, Args)]
pub struct TimeclientArgs {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Give up after this long without a date.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Use UDP.
    #[arg(long)]
    pub udp: bool,
    /// Give up after this long without an answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit after the self-check instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

/// A flag group (`ServerFlags`, `ServerArgs` …) with every flag at its default, as the command
/// line would give it with none: for commands and hosts that fill in only what they change.
pub fn defaults<A: clap::Args + clap::FromArgMatches>() -> A {
    let command = A::augment_args(clap::Command::new("warren"));
    A::from_arg_matches(&command.get_matches_from(["warren"])).expect("every flag has a default")
}

/// `--metrics`: a path of its own (from `/`, no query, no space), or `off`.
fn metrics_path(raw: &str) -> Result<String, String> {
    let plain = raw.starts_with('/') && !raw.contains(['?', '#']) && !raw.chars().any(char::is_whitespace);
    if raw == "off" || plain { Ok(raw.to_owned()) } else { Err(format!("{raw:?}: a path such as /metrics, or off")) }
}
