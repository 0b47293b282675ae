//! `warren registry` (the server) and its clients: `lookup`, `bind`, `rebind`, `unbind`, `list`,
//! `watch` and `register`. See docs/registry.md.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use warren_dns::RegistryDirectory;
use warren_registry::backend::Backend;
use warren_registry::client::Client;
use warren_registry::{Endpoint, EventKind, Name, Revision, Transport};
use warren_registry_etcd::{Etcd, EtcdConfig};
use warren_registry_server::api;
use warren_registry_server::embedded::Embedded;
use warren_registry_server::health::Checked;
use warren_registry_server::metrics::{self, Metered, RegistryMetrics};
use warren_registry_server::server::{self, Limits};
use warren_registry_server::state::Config;

/// The registry's default address: loopback, on a port that no common service uses (it is not
/// in /etc/services); `--listen` picks another.
const DEFAULT_ADDR: &str = "127.0.0.1:7390";

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Run the registry server: names to endpoints, leases, watches, stored durably.
    Registry(Box<ServerArgs>),
    /// Print a name's endpoints, one `NAME ENDPOINT` line each (NAME in any case; printed as the
    /// registry spells it).
    Lookup {
        /// The name to look up.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Bind a free name to endpoints (fails if the name is bound).
    Bind(BindArgs),
    /// Bind a name to endpoints, replacing what it had.
    Rebind(BindArgs),
    /// Remove a name and its endpoints.
    Unbind {
        /// The name to remove.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every name starting with PREFIX, with its endpoints.
    List {
        /// Only names starting with this [default: every name].
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print changes to names starting with PREFIX as they happen, until stopped.
    Watch {
        /// Only names starting with this [default: every name].
        #[arg(default_value = "")]
        prefix: String,
        /// Print the changes after this revision first [default: the current one].
        #[arg(long)]
        from: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register an endpoint under a lease, renew it at TTL/3 until stopped, then release it.
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, short = 'l', default_value = DEFAULT_ADDR)]
    pub listen: SocketAddr,
    /// Directory of the store, made private (0700) [default: $XDG_STATE_HOME/warren/registry,
    /// else ~/.local/state/warren/registry].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// File holding the admin token (created with mode 0600 and a random token if missing)
    /// [default: DATA/admin.token].
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself, instead of the file (for tests: every local user sees it in ps).
    #[arg(long, conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// The server model the binary protocol is served under (any in-process one: iterative,
    /// thread, pool, event, green, hybrid); every one answers a connection's pipelined requests
    /// and watches as they complete.
    #[arg(long, default_value = "hybrid")]
    pub model: warren_models::Model,
    /// Refuse connections beyond this many.
    #[arg(long, default_value_t = 1024)]
    pub max_conns: usize,
    /// Close a connection idle this long (no request, answer or watch).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub idle_timeout: Duration,
    /// Largest request frame, in bytes.
    #[arg(long, default_value_t = warren_registry::wire::MAX_REQUEST)]
    pub max_frame: usize,
    /// Most endpoints under one name.
    #[arg(long, default_value_t = 64)]
    pub max_endpoints: usize,
    /// Events kept for watches that resume from an older revision.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// How late after its TTL a lapsed lease may be removed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub sweep: Duration,
    /// Also answer DNS on this address, UDP and TCP: A, AAAA and SRV for NAME.ZONE (port 0 picks
    /// one; a second `warren: serving` line gives it).
    #[arg(long)]
    pub dns: Option<SocketAddr>,
    /// The DNS zone answered for.
    #[arg(long, default_value = "warren.")]
    pub zone: warren_dns::Zone,
    /// TTL of DNS records, in seconds (and how long resolvers cache "no such name").
    #[arg(long, default_value = "5")]
    pub dns_ttl: std::num::NonZeroU32,
    /// DNS over UDP: answers a second per source prefix (/24, /56), BIND's response-rate
    /// limiting; 0 turns it off.
    #[arg(long, default_value_t = warren_dns::RateLimit::default().responses_per_second)]
    pub dns_rate: u32,
    /// DNS over UDP: every this many answers refused by --dns-rate, one is sent truncated (TC)
    /// so that a real client retries over TCP; 0 drops them all.
    #[arg(long, default_value_t = warren_dns::RateLimit::default().slip)]
    pub dns_slip: u32,
    /// DNS over UDP: how long a prefix over --dns-rate stays limited after its flood.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub dns_window: Duration,
    /// Also serve the HTTP/JSON API on this address (port 0 picks one; a `warren: serving` line
    /// gives it).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// HTTP connections served at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 1024)]
    pub http_max_conns: usize,
    /// Close an HTTP connection that has not sent a request's head this long after opening or
    /// after its previous answer (an open watch is not idle).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub http_header_timeout: Duration,
    /// Answer 408 and close an HTTP connection whose request body takes longer than this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub http_body_timeout: Duration,
    /// Close an HTTP connection whose peer takes no byte of an answer for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub http_send_timeout: Duration,
    /// HTTP watch streams open at once; one more is answered 503.
    #[arg(long, default_value_t = 512)]
    pub http_max_watches: usize,
    /// HTTP watch streams open at once from one address; one more is answered 429.
    #[arg(long, default_value_t = 32)]
    pub http_max_watches_per_source: usize,
    /// Where names live: `embedded` (a redb file in --data) or
    /// `etcd://host:port[,host:port…][/prefix]` (all state in etcd, shared by every registry
    /// pointed at it).
    #[arg(long, default_value = "embedded")]
    pub store: String,
}

/// Where the registry is and who is asking.
#[derive(Debug, Args)]
pub struct Conn {
    /// Registry address [default: $WARREN_REGISTRY, else 127.0.0.1:7390].
    #[arg(long)]
    pub registry: Option<SocketAddr>,
    /// Token that owns the names this command changes [default: $WARREN_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
    /// Give up after this long without an answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Weight among the name's endpoints (SRV weight).
    #[arg(long, default_value_t = 1)]
    pub weight: u16,
    /// The endpoint speaks UDP (default TCP).
    #[arg(long)]
    pub udp: bool,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// The name (compared without regard to case, printed as first spelt).
    pub name: String,
    /// Endpoints as ADDR:PORT (IPv6 as [ADDR]:PORT).
    #[arg(required = true)]
    pub addrs: Vec<SocketAddr>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The name to register the endpoint under.
    pub name: String,
    /// The endpoint, ADDR:PORT.
    pub addr: SocketAddr,
    /// Lease time to live: seconds, or a duration such as 1500ms or 1m.
    #[arg(long, value_parser = parse_ttl, default_value = "10")]
    pub ttl: Duration,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub conn: Conn,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

pub fn run(command: RegistryCommand) -> anyhow::Result<()> {
    if let RegistryCommand::Registry(args) = command {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(async {
            let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
            let stop = async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            };
            serve(*args, None, stop).await
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(client_command(command))
}

/// Serve the registry until `stop`: on `listener` if given (the node's; its readiness line is
/// then the node's to print), else on `args.listen`.
pub async fn serve(
    args: ServerArgs,
    listener: Option<std::net::TcpListener>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let data = match args.data {
        Some(dir) => dir,
        None => state_dir()?.join("registry"),
    };
    warren_registry_server::datadir::private_dir(&data).context("the data directory")?;
    let admin = match args.admin_token {
        Some(token) => token,
        None => token_file(&args.admin_token_file.unwrap_or_else(|| data.join("admin.token")))?,
    };
    let config = Config { max_endpoints: args.max_endpoints, history: args.history, sweep: args.sweep };
    let store: Arc<dyn Backend> = if args.store == "embedded" {
        Arc::new(Embedded::open(&data, config, Some(&admin)).context("cannot open the store")?)
    } else {
        let mut etcd = EtcdConfig::from_url(&args.store).context("--store")?;
        etcd.admin = Some(admin);
        etcd.max_endpoints = args.max_endpoints;
        Arc::new(Etcd::connect(etcd).await.with_context(|| format!("cannot reach {}", args.store))?)
    };
    // Every request is counted beneath the health checks, whichever interface it came by.
    let metrics = RegistryMetrics::new(store.clone());
    let store: Arc<dyn Backend> = Arc::new(Metered::new(store, metrics.clone()));
    // Health checks sit in front of every store: lookups, the API and DNS see healthy endpoints.
    let backend = Arc::new(Checked::new(store).await.context("cannot start health checks")?);
    let dns = match args.dns {
        Some(addr) => {
            let rate_limit = warren_dns::RateLimit {
                responses_per_second: args.dns_rate,
                slip: args.dns_slip,
                window: args.dns_window,
                ..warren_dns::RateLimit::default()
            };
            let config =
                warren_dns::Config { zone: args.zone, ttl: args.dns_ttl, rate_limit, ..warren_dns::Config::default() };
            let directory = Arc::new(RegistryDirectory(backend.clone()));
            let dns = warren_dns::Server::bind(addr, config, directory)
                .with_context(|| format!("cannot serve DNS on {addr}"))?;
            metrics.show_beside(dns.metrics().registry());
            Some(dns)
        }
        None => None,
    };
    let announce = listener.is_none();
    let listener = match listener {
        Some(listener) => listener,
        None => crate::serve::listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?,
    };
    let model = args.model;
    if matches!(model, warren_models::Model::Fork | warren_models::Model::Prefork) {
        anyhow::bail!("the registry runs under an in-process model: its store is shared by every connection");
    }
    let limits = Limits {
        max_conns: args.max_conns,
        max_frame: args.max_frame,
        idle_timeout: args.idle_timeout,
        ..Limits::default()
    };
    let api = match args.http {
        Some(addr) => Some(crate::serve::listen(addr).with_context(|| format!("cannot serve HTTP on {addr}"))?),
        None => None,
    };
    let api_limits = api::Limits {
        max_conns: args.http_max_conns,
        header_timeout: args.http_header_timeout,
        body_timeout: args.http_body_timeout,
        send_timeout: args.http_send_timeout,
        max_watches: args.http_max_watches,
        max_watches_per_source: args.http_max_watches_per_source,
    };
    if announce {
        println!("warren: serving registry (tcp) on {}", listener.local_addr()?);
    }
    if let Some(dns) = &dns {
        println!("warren: serving dns (udp, tcp) on {}", dns.local_addr());
    }
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let api = match api {
        Some(api) => {
            println!("warren: serving registry-http (tcp) on {}", api.local_addr()?);
            let mut stopped = stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let routes = metrics::route(api::router(backend.clone(), &api_limits), metrics);
            Some(tokio::spawn(api::serve_router(api, routes, api_limits, shutdown)))
        }
        None => None,
    };
    std::io::stdout().flush()?;
    let stop = async move {
        stop.await;
        let _ = stopping.send(true);
    };
    let report = server::serve(backend, listener, limits, model, stop).await?;
    if let Some(api) = api {
        // Open watch streams end with the shutdown; give the rest a moment, not forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    }
    if let Some(dns) = dns {
        tokio::task::spawn_blocking(|| dns.shutdown()).await?;
    }
    if announce {
        println!("warren: stopped: {} connections served, {} refused", report.accepted, report.refused);
    }
    Ok(())
}

/// `$XDG_STATE_HOME/warren`, else `~/.local/state/warren`.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("warren"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("neither XDG_STATE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/state/warren"))
}

/// Reads a token from `path`, creating the file (mode 0600, 32 random bytes in hex) if missing.
pub fn token_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(token) => return Ok(token.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    Ok(token)
}

impl Conn {
    /// The registry's address: the flag, else `WARREN_REGISTRY`, else the default.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        match self.registry {
            Some(addr) => Ok(addr),
            None => match std::env::var("WARREN_REGISTRY") {
                Ok(addr) => addr.parse().with_context(|| format!("WARREN_REGISTRY={addr:?}: not ADDR:PORT")),
                Err(_) => Ok(DEFAULT_ADDR.parse().expect("valid")),
            },
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let addr = self.addr()?;
        Client::connect(addr, self.timeout).await.with_context(|| format!("cannot reach the registry at {addr}"))
    }

    pub fn token(&self) -> anyhow::Result<String> {
        match &self.token {
            Some(token) => Ok(token.clone()),
            None => std::env::var("WARREN_TOKEN").context("this command needs a token: --token or WARREN_TOKEN"),
        }
    }

    /// Runs one request, bounded by the timeout. A peer that is silent, or that answers with
    /// something other than the registry's frames (the connection is then dropped), is named
    /// with what was expected of it.
    pub async fn ask<T>(&self, f: impl Future<Output = Result<T, warren_registry::Error>>) -> anyhow::Result<T> {
        let addr = self.addr()?;
        let expected = "expected a warren registry (is it the right server?)";
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => anyhow::bail!("{addr} did not answer within {:?}; {expected}", self.timeout),
            Ok(Err(e @ warren_registry::Error::Unavailable(_))) => {
                Err(anyhow::Error::new(e).context(format!("{addr}: {expected}")))
            }
            Ok(answer) => Ok(answer?),
        }
    }
}

impl EndpointArgs {
    pub fn endpoint(&self, addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr: addr.ip(),
            port: addr.port(),
            transport: if self.udp { Transport::Udp } else { Transport::Tcp },
            weight: self.weight,
            meta: self.meta.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }
}

async fn client_command(command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Registry(_) => unreachable!("served above"),
        RegistryCommand::Lookup { name, conn } => {
            let name = Name::new(name)?;
            let client = conn.connect().await?;
            // As `list` prints it: the name as the registry spells it, whatever the case asked.
            let (_, entry) = conn.ask(client.lookup(&name)).await?;
            entry.endpoints.iter().for_each(|e| println!("{} {e}", entry.name));
        }
        RegistryCommand::Bind(args) => {
            let (name, token, endpoints, client) = bind_parts(&args).await?;
            let revision = args.conn.ask(client.bind(&name, &token, endpoints)).await?;
            println!("bound {name} at revision {revision}");
        }
        RegistryCommand::Rebind(args) => {
            let (name, token, endpoints, client) = bind_parts(&args).await?;
            let revision = args.conn.ask(client.rebind(&name, &token, endpoints)).await?;
            println!("rebound {name} at revision {revision}");
        }
        RegistryCommand::Unbind { name, conn } => {
            let (name, token) = (Name::new(name)?, conn.token()?);
            let client = conn.connect().await?;
            let revision = conn.ask(client.unbind(&name, &token)).await?;
            println!("unbound {name} at revision {revision}");
        }
        RegistryCommand::List { prefix, conn } => {
            let client = conn.connect().await?;
            let (_, entries) = conn.ask(client.list(&prefix)).await?;
            for entry in entries {
                entry.endpoints.iter().for_each(|e| println!("{} {e}", entry.name));
            }
        }
        RegistryCommand::Watch { prefix, from, conn } => watch(&prefix, from, &conn).await?,
        RegistryCommand::Register(args) => crate::registry_register::register(args).await?,
    }
    Ok(())
}

async fn bind_parts(args: &BindArgs) -> anyhow::Result<(Name, String, Vec<Endpoint>, Client)> {
    let (name, token) = (Name::new(args.name.clone())?, args.conn.token()?);
    args.addrs.iter().try_for_each(|&a| check_reachable(a))?;
    let endpoints = args.addrs.iter().map(|&a| args.endpoint.endpoint(a)).collect();
    Ok((name, token, endpoints, args.conn.connect().await?))
}

/// Prints `REVISION put|delete NAME ENDPOINT` lines until SIGINT or SIGTERM.
async fn watch(prefix: &str, from: Option<u64>, conn: &Conn) -> anyhow::Result<()> {
    let client = conn.connect().await?;
    let from = match from {
        Some(from) => Revision(from),
        None => conn.ask(client.list(prefix)).await?.0,
    };
    let mut watch = conn.ask(client.watch(prefix, from)).await?;
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    eprintln!("warren: watching {prefix:?} after revision {from}");
    let mut out = std::io::stdout();
    loop {
        let events = tokio::select! {
            events = watch.next() => events?,
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        };
        for e in events {
            let kind = if e.kind == EventKind::Put { "put" } else { "delete" };
            writeln!(out, "{} {kind} {} {}", e.revision, e.name, e.endpoint)?;
        }
        out.flush()?;
    }
}

/// Bails unless `addr` is a concrete address a client could reach.
pub fn check_reachable(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.ip().is_unspecified() || addr.port() == 0 {
        bail!("{addr}: not an address a client can reach");
    }
    Ok(())
}
