//! Server commands: `warren serve` and the course's aliases (pingpong server, chatserver,
//! timeserver).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use anyhow::{Context, bail};
use socket2::{Domain, Protocol as IpProtocol, Socket, Type};
use warren_models::{Model, ServeConfig, ServeReport, UrgentMode};
use warren_node::builtin::{Serve, Settings, dispatch};
use warren_node::config::Transport;
use warren_proto::{DatagramService, Limits, Service};

use crate::cli::{ChatserverArgs, LargerhttpdArgs, PingpongArgs, Protocol, ServerFlags, TimeserverArgs};

/// `warren serve <protocol>`.
pub fn serve(protocol: Protocol, flags: &ServerFlags) -> anyhow::Result<()> {
    crate::logging::init(flags.debug, Default::default(), flags.access_log.as_ref())?;
    let mut settings = Settings {
        limits: Limits {
            idle_timeout: flags.idle_timeout.unwrap_or(Duration::from_secs(300)),
            read_timeout: flags.read_timeout,
            max_request: flags.max_request.unwrap_or(4096),
        },
        ..Settings::default()
    };
    if let Some(delay) = flags.delay {
        settings.pingpong.delay = delay;
        settings.timeserver.delay = delay;
    }
    settings.pingpong.hits = flags.hits;
    match protocol {
        Protocol::Http => settings.http = Some(http_service(flags)?),
        Protocol::Relay => {
            let backend = flags.backend.context("relay: give the backend with --backend ADDR")?;
            settings.relay = Some(warren_proto::relay::Relay::new(backend));
        }
        Protocol::Handoff => {
            use warren_proto::handoff::{Front, Peek};
            let to = flags.to.clone().context("handoff: give the hand-off socket with --to PATH")?;
            let peek = if flags.peek == "head" { Peek::Head } else { Peek::Line };
            settings.handoff = Some(Front::new(warren_proto::HandOffTarget::new(to), peek));
        }
        _ => {}
    }
    // oob reports urgent bytes, so only models that arm urgent data can serve it.
    let urgent = match protocol {
        Protocol::Oob => warren_node::builtin::oob_urgent(flags.model)?,
        _ => UrgentMode::Off,
    };
    let transport = if flags.udp { Transport::Udp } else { Transport::Tcp };
    dispatch(protocol, transport, settings, Foreground { flags, urgent }).unwrap_or_else(|| match protocol {
        Protocol::Registry => bail!("the registry runs as `warren registry` (or as a builtin of `warren up`)"),
        Protocol::Objects => bail!("the object server runs as `warren objects serve` (or as a builtin of `warren up`)"),
        Protocol::Switch => bail!("the switch runs as `warren switch` (or as a builtin of `warren up`)"),
        Protocol::Agents => bail!("the agent host runs as a builtin of `warren up` (builtin = \"agents\")"),
        _ => bail!("{} has no UDP form; UDP serves echo, discard, daytime, time and chargen", protocol.name()),
    })
}

/// Serves in the foreground, on the address and under the model the flags give.
struct Foreground<'a> {
    flags: &'a ServerFlags,
    /// Whether connections are armed for TCP urgent data (`oob`).
    urgent: UrgentMode,
}

impl Serve for Foreground<'_> {
    type Output = anyhow::Result<()>;

    fn tcp<S: Service>(self, service: S) -> anyhow::Result<()> {
        serve_tcp(service, self.flags, self.urgent)
    }

    fn udp<D: DatagramService>(self, service: D) -> anyhow::Result<()> {
        serve_udp(service, self.flags)
    }
}

/// The HTTP service over a document root that no symlink escapes unless asked.
fn http_service(flags: &ServerFlags) -> anyhow::Result<warren_proto::http::Http> {
    use warren_docroot::{DocRoot, DocRootOptions};
    let options = DocRootOptions {
        follow_symlinks_outside: flags.follow_symlinks,
        listing: flags.listing,
        dotfiles: flags.dotfiles,
        ..Default::default()
    };
    let root = DocRoot::new(&flags.root, options).with_context(|| format!("document root {}", flags.root.display()))?;
    let mut http = warren_proto::http::Http::new(std::sync::Arc::new(root));
    http.access_log = flags.access_log.is_some();
    http.metrics_path = (flags.metrics != "off").then(|| flags.metrics.clone());
    if let Some(path) = &http.metrics_path
        && flags.root.join(path.trim_start_matches('/')).exists()
    {
        eprintln!("warren: {} in {} is not served: --metrics answers {path}", path, flags.root.display());
    }
    if flags.model.forks() {
        let slots = warren_models::activity::shared_slots(warren_proto::http::HttpMetrics::SLOTS)?;
        http.metrics = warren_proto::http::HttpMetrics::in_slots(slots);
    }
    if let Some(idle) = flags.idle_timeout {
        http.limits.idle_timeout = idle;
    }
    http.limits.read_timeout = flags.read_timeout;
    if let Some(line) = flags.max_request {
        http.limits.request.max_request_line = line;
    }
    http.limits.request.max_header_bytes = flags.max_header_bytes;
    http.limits.request.max_headers = flags.max_headers;
    let key_file = match &flags.cookie_key_file {
        Some(path) => path.clone(),
        None => default_key_file()?,
    };
    let key = cookie_key(&key_file)?;
    let mut seed = [0; 8];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for session ids: {e}"))?;
    let mut visits = warren_proto::http::VisitsConfig::new(key, u64::from_le_bytes(seed));
    visits.ttl = flags.session_ttl;
    visits.max_sessions = flags.max_sessions;
    http.visits = Some(std::sync::Arc::new(visits));
    Ok(http)
}

/// The `/visits` signing key kept in `path`: read if there (32 raw bytes or 64 hex digits),
/// otherwise made from the OS's randomness and written private (0600) and synced, so that cookie
/// counts survive a restart and no other user can forge them.
pub fn cookie_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) => parse_key(&bytes).with_context(|| {
            format!("cookie key file {}: want 32 bytes or 64 hex digits, found {} bytes", path.display(), bytes.len())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the cookie key: {e}"))?;
            // Written whole under a private name, then linked into place: a server starting at
            // the same moment either wins the link or reads a complete key, never half of one.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let written = (|| {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
                file.write_all(&key)?;
                file.sync_all()?;
                std::fs::hard_link(&tmp, path)
            })();
            let _ = std::fs::remove_file(&tmp);
            match written {
                Ok(()) => Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => cookie_key(path),
                Err(e) => Err(e).with_context(|| format!("cannot create cookie key file {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot read cookie key file {}", path.display())),
    }
}

/// `$XDG_STATE_HOME/warren/cookie.key` (else under `~/.local/state`), its directory made
/// private: not the current directory, which `largerhttpd` serves.
fn default_key_file() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(std::env::var_os("HOME").context("neither XDG_STATE_HOME nor HOME is set")?)
            .join(".local/state"),
    };
    let dir = state.join("warren");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join("cookie.key"))
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(key) = bytes.try_into() {
        return Some(key);
    }
    let hex = std::str::from_utf8(bytes).ok()?.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// `warren largerhttpd <port> <maxthreads>`: the course's program, grown up.
pub fn largerhttpd(args: &LargerhttpdArgs) -> anyhow::Result<()> {
    let mut flags = default_flags(Model::Event, SocketAddr::new(args.listen, args.port));
    flags.threads = Some(args.maxthreads);
    flags.root = ".".into();
    serve(Protocol::Http, &flags)
}

/// `warren pingpong <client|server> <host> <port>`.
pub fn pingpong(args: &PingpongArgs) -> anyhow::Result<()> {
    let options = warren_proto::pingpong::Options { delay: args.delay, hits: args.hits, ..Default::default() };
    if args.role == "client" {
        return crate::clients::pingpong(&args.host, args.port, &options, args.timeout);
    }
    let ip = match args.listen {
        Some(ip) => ip,
        None => resolve(&args.host, args.port)?.ip(),
    };
    let mut flags = default_flags(args.model, SocketAddr::new(ip, args.port));
    flags.threads = Some(args.threads);
    flags.processes = args.processes;
    flags.delay = Some(args.delay);
    flags.hits = args.hits;
    serve(Protocol::Pingpong, &flags)
}

/// `warren chatserver -p <port> -d <level>`.
pub fn chatserver(args: &ChatserverArgs) -> anyhow::Result<()> {
    let mut flags = default_flags(args.model, SocketAddr::new(args.listen, args.port));
    flags.threads = Some(args.threads);
    flags.processes = args.processes;
    flags.idle_exit = Some(args.idle_exit);
    flags.debug = Some(args.debug);
    serve(Protocol::Chat, &flags)
}

/// `warren timeserver [port]`.
pub fn timeserver(args: &TimeserverArgs) -> anyhow::Result<()> {
    let flags = default_flags(args.model, SocketAddr::new(args.listen, args.port));
    init_logging(flags.debug);
    let service = warren_proto::timeserver::TimeServer {
        delay: args.delay,
        format: args.format,
        zone: crate::local_zone::local_offset,
    };
    serve_tcp(service, &flags, UrgentMode::Off)
}

fn serve_tcp<S: Service>(service: S, flags: &ServerFlags, urgent: UrgentMode) -> anyhow::Result<()> {
    let name = service.name();
    let (listener, transport, addr): (warren_models::Listener, _, _) = match &flags.handoff_listen {
        Some(path) => {
            let target = warren_proto::HandOffTarget::new(path.clone());
            let listener = warren_models::handoff::HandOffListener::bind(&target)
                .with_context(|| format!("cannot receive hand-offs at {target}"))?;
            (listener.into(), "hand-off", target.to_string())
        }
        None => {
            let listener = listen(flags.listen).with_context(|| format!("cannot listen on {}", flags.listen))?;
            let addr = listener.local_addr()?.to_string();
            (listener.into(), "tcp", addr)
        }
    };
    let config = ServeConfig { urgent, ..config(flags) };
    let report = warren_models::serve(flags.model, service, listener, &config, || {
        announce(name, transport, flags.model, &addr)
    })?;
    finish(&report);
    Ok(())
}

fn serve_udp<D: DatagramService>(service: D, flags: &ServerFlags) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(flags.listen).with_context(|| format!("cannot bind {}", flags.listen))?;
    let (name, addr) = (service.name(), socket.local_addr()?);
    let report = warren_models::udp::serve_udp(flags.model, service, socket, &config(flags), || {
        announce(name, "udp", flags.model, &addr)
    })?;
    finish(&report);
    Ok(())
}

/// The readiness line: scripts and tests wait for it and read the address from it.
fn announce(protocol: &str, transport: &str, model: Model, addr: &dyn std::fmt::Display) {
    println!("warren: serving {protocol} ({transport}) under {model} on {addr}");
    let _ = std::io::stdout().flush();
}

pub(crate) fn finish(report: &ServeReport) {
    if let Some(hub) = &report.hub_report {
        println!("{hub}");
    }
    let why = if report.idle_exit { " (idle)" } else { "" };
    println!("warren: stopped{why}: {} connections served, {} refused", report.accepted, report.refused);
}

fn config(flags: &ServerFlags) -> ServeConfig {
    let mut config = ServeConfig::for_model(flags.model);
    config.helpers = flags.helpers;
    if let Some(threads) = flags.threads {
        config = config.with_threads(flags.model, threads);
    }
    if let Some(max_conns) = flags.max_conns {
        config.max_conns = max_conns;
    }
    ServeConfig {
        processes: flags.processes,
        max_active: flags.max,
        queue: flags.queue,
        idle_exit: flags.idle_exit,
        write_timeout: flags.write_timeout,
        datagram_rate: warren_models::udp::SourceRate {
            per_second: flags.udp_rate,
            burst: flags.udp_burst,
            ..warren_models::udp::SourceRate::default()
        },
        ..config
    }
}

/// A listener with SO_REUSEADDR and a backlog as deep as the kernel allows.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(IpProtocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Resolve `host:port` to its first address.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()?.next().with_context(|| format!("{host} has no address"))
}

fn default_flags(model: Model, listen: SocketAddr) -> ServerFlags {
    let mut flags: ServerFlags = crate::cli::defaults();
    flags.model = model;
    flags.listen = listen;
    flags
}

/// Log through `tracing` to standard output, one bare line per event (or JSON, with
/// `--log-format json`), so that the protocols' narration reads like the course's programs.
/// `WARREN_LOG` or `RUST_LOG` overrides the level.
pub fn init_logging(debug: Option<u8>) {
    let _ = crate::logging::init(debug, Default::default(), None);
}
