//! `warren up`: the node, hosting every service of `warren.toml` (or of xinetd's files, or the
//! embedded default), and `warren status`, which asks a running node what it is doing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use std::sync::Arc;

use warren_node::config::{Kind, RegistryLink, Service, StatusAddr};
use warren_node::{Config, Hooks};

use crate::dashboard::Dashboard;
use crate::systemd::Manager;
use crate::up_registry::Registrar;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The node's config (TOML); without it, the embedded default (loopback only).
    #[arg(long, short = 'c', conflicts_with = "xinetd")]
    pub config: Option<PathBuf>,
    /// Read xinetd's configuration instead (e.g. /etc/xinetd.conf, with its includedir).
    #[arg(long)]
    pub xinetd: Option<PathBuf>,
    /// Where `warren status` finds the node: unix:/path, address:port or off (default: the
    /// config's `status`, else $XDG_RUNTIME_DIR/warren-node.sock or $TMPDIR/warren-<uid>/node.sock, that directory private).
    #[arg(long)]
    pub status: Option<String>,
    /// Register every hosted service with the registry at ADDR, or `off` (default: the config's
    /// `registry`, else the registry this node hosts, if any).
    #[arg(long, value_name = "ADDR|off")]
    pub registry: Option<String>,
    /// Serve the dashboard, /api/status, /events and /metrics on ADDR, or `off` (default: the
    /// config's `admin`, else 127.0.0.1:7080). Read-only and without a credential: keep it on loopback.
    #[arg(long, value_name = "ADDR|off")]
    pub admin: Option<String>,
    /// On SIGTERM, how long running children may take to finish before they get SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub grace: Duration,
    /// How long children have after that SIGTERM before SIGKILL (as timeout(1)'s --kill-after).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub kill_after: Duration,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    pub print_default: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's status endpoint: unix:/path or address:port (default: as `warren up`).
    #[arg(long)]
    pub status: Option<String>,
}

/// `warren up`.
pub fn up(args: &UpArgs) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if args.print_default {
        print!("{}", warren_node::toml_config::DEFAULT);
        return Ok(());
    }
    // SAFETY: nothing has started a thread yet (logging and signal registration come after).
    let handover = unsafe { Manager::take_from_env() }?;
    let manager = handover.manager;
    // Signals first, so that a SIGHUP or SIGTERM arriving while services start is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let config = load(args)?;
    crate::logging::init(None, config.logging.format, config.logging.access_log.as_ref())?;
    report(&config);
    let count = config.services.len();
    let registrar = registrar(&config)?.map(Arc::new);
    let dashboard = dashboard(&config, registrar.as_deref())?;
    let hooks = Announce { registrar: registrar.clone() };
    let inherited = warren_node::Inherited::new(handover.listeners)?;
    let passed = inherited.len();
    let node = warren_node::start_with(config, Box::new(hooks), inherited).context("cannot start the node")?;
    let up = match passed {
        0 => format!("up: {count} services"),
        n => format!("up: {count} services, {n} listeners from the service manager"),
    };
    println!("warren: {up}");
    let _ = std::io::stdout().flush();
    manager.ready(&up);
    let (stop_reports, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        if let Some(registrar) = &registrar {
            let node = &node;
            scope.spawn(move || report_loads(node, registrar, &stopped));
        }
        let (stop_samples, samples_stopped) = std::sync::mpsc::channel::<()>();
        if let Some(dashboard) = &dashboard {
            let node = &node;
            scope.spawn(move || sample(node, dashboard, &samples_stopped));
        }
        serve_signals(args, &node, &mut signals, &manager);
        drop(stop_reports);
        drop(stop_samples);
    });
    if let Some(dashboard) = dashboard {
        dashboard.stop();
    }
    // Services leave the registry before they stop answering, so that no client is sent to one.
    if let Some(registrar) = &registrar {
        registrar.release_all();
    }
    node.drain(args.grace, args.kill_after);
    println!("warren: stopped");
    Ok(())
}

/// How often the node puts its services' load in their registrations.
const LOAD_EVERY: Duration = Duration::from_secs(1);

/// Reports every registered service's load (see [`Registrar::report_loads`]) each
/// [`LOAD_EVERY`], until `stopped` says the node is stopping.
fn report_loads(node: &warren_node::NodeHandle, registrar: &Registrar, stopped: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LOAD_EVERY) {
        if let Ok(status) = node.status() {
            registrar.report_loads(&status);
        }
    }
}

/// How often the dashboard is given the node's status (and the chart's resolution).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Gives `dashboard` the node's status now and each [`SAMPLE_EVERY`] until `stopped`.
fn sample(node: &warren_node::NodeHandle, dashboard: &Dashboard, stopped: &std::sync::mpsc::Receiver<()>) {
    loop {
        if let Ok(status) = node.status() {
            dashboard.sample(&status);
        }
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = stopped.recv_timeout(SAMPLE_EVERY) {
            return;
        }
    }
}

/// The admin listener, where the configuration (or `--admin`) puts it. The default address
/// taken by something else (another node) is a warning; an address asked for is a must.
fn dashboard(config: &Config, registrar: Option<&Registrar>) -> anyhow::Result<Option<Dashboard>> {
    let Some(addr) = config.admin else { return Ok(None) };
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) if addr == warren_node::config::DEFAULT_ADMIN => {
            eprintln!("warren: warning: no dashboard: cannot listen on {addr}: {e} (set `admin` or --admin)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen for the dashboard on {addr}")),
    };
    let local = listener.local_addr()?;
    let dashboard = Dashboard::start(listener, registrar.map(|r| r.link().target))?;
    println!("warren: dashboard: http://{local}/");
    Ok(Some(dashboard))
}

/// Reloads on SIGHUP; returns at SIGINT or SIGTERM.
fn serve_signals(
    args: &UpArgs,
    node: &warren_node::NodeHandle,
    signals: &mut signal_hook::iterator::Signals,
    manager: &Manager,
) {
    use signal_hook::consts::SIGHUP;
    for signal in signals.forever() {
        if signal == SIGHUP {
            manager.reloading();
            let mut count = 0;
            let status = match load(args).map_err(|e| format!("{e:#}")).and_then(|config| {
                report(&config);
                count = config.services.len();
                node.reload(config)
            }) {
                Ok(()) => {
                    println!("warren: reloaded");
                    format!("reloaded: {count} services")
                }
                Err(e) => {
                    eprintln!("warren: reload failed, configuration unchanged: {e}");
                    format!("reload failed, configuration unchanged: {e}")
                }
            };
            let _ = std::io::stdout().flush();
            manager.ready(&status);
        } else {
            let most = args.grace + args.kill_after + warren_node::node::REAP_WAIT;
            let draining = format!("draining (up to {})", humantime::format_duration(most));
            println!("warren: {draining}");
            let _ = std::io::stdout().flush();
            manager.stopping(&draining);
            break;
        }
    }
}

fn load(args: &UpArgs) -> anyhow::Result<Config> {
    let mut config = match (&args.config, &args.xinetd) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            warren_node::toml_config::parse(&text, &path.display().to_string())?
        }
        (None, Some(path)) => {
            let status = StatusAddr::Unix(warren_node::toml_config::default_status_path());
            warren_node::xinetd::load(path, Some(status))?
        }
        (None, None) => warren_node::toml_config::parse(warren_node::toml_config::DEFAULT, "(embedded default)")?,
    };
    if let Some(status) = &args.status {
        config.status = warren_node::toml_config::status_addr(status).map_err(anyhow::Error::msg)?;
    }
    if let Some(admin) = &args.admin {
        config.admin = warren_node::toml_config::admin_addr(admin).map_err(anyhow::Error::msg)?;
    }
    if let Some(registry) = &args.registry {
        let addr = warren_node::toml_config::registry_addr(registry).map_err(anyhow::Error::msg)?;
        config.registry = addr.map(|addr| RegistryLink { addr: Some(addr), ..config.registry.unwrap_or_default() });
    }
    crate::switch_node::check(&config)?;
    crate::agents_node::check(&config)?;
    Ok(config)
}

/// Registrations for `config`: with a registry configured, or one hosted here. A reload keeps
/// the registry the node started with.
fn registrar(config: &Config) -> anyhow::Result<Option<Registrar>> {
    let hosted = config.services.iter().any(crate::up_registry::is_registry);
    match config.registry {
        Some(link) if link.addr.is_some() || hosted => {
            let token = crate::up_registry::node_token().context("the node's registry token")?;
            Ok(Some(Registrar::new(link, token)?))
        }
        _ => Ok(None),
    }
}

/// Ignored attributes are warnings, listed; disabled services are named.
fn report(config: &Config) {
    for note in &config.ignored {
        eprintln!("warren: warning: {note}");
    }
    if !config.disabled.is_empty() {
        println!("warren: disabled: {}", config.disabled.join(", "));
    }
}

/// Prints the readiness line of each service once it listens (scripts and tests wait for it),
/// registers it, and hosts the registry builtin.
struct Announce {
    registrar: Option<Arc<Registrar>>,
}

impl Hooks for Announce {
    fn listening(&mut self, service: &Service, addr: SocketAddr) {
        let how = match &service.kind {
            Kind::Builtin(b) if b.protocol == warren_node::config::Protocol::Switch => crate::switch_node::describe(b),
            Kind::Builtin(b) => b.model.to_string(),
            Kind::Exec(e) if e.wait => format!("exec wait {}", e.program.display()),
            Kind::Exec(e) => format!("exec nowait {}", e.program.display()),
            Kind::Redirect(to) => format!("redirect to {to}"),
        };
        println!("warren: serving {} ({}) under {how} on {addr}", service.name, service.listen.transport.name());
        let _ = std::io::stdout().flush();
        if let Some(registrar) = &self.registrar {
            registrar.listening(service, addr);
        }
    }

    fn closed(&mut self, name: &str) {
        if let Some(registrar) = &self.registrar {
            registrar.closed(name);
        }
        println!("warren: closed {name}");
        let _ = std::io::stdout().flush();
    }

    fn host(
        &mut self,
        service: &Service,
        listener: std::net::TcpListener,
        shutdown: Arc<warren_models::Shutdown>,
    ) -> Option<std::io::Result<std::thread::JoinHandle<()>>> {
        match &service.kind {
            Kind::Builtin(b) if b.protocol == warren_node::config::Protocol::Objects => {
                let registry = self.registrar.as_ref().map(|r| r.link());
                Some(crate::objects_cmd::host(service, b, listener, shutdown, registry))
            }
            Kind::Builtin(b) if b.protocol == warren_node::config::Protocol::Switch => {
                Some(crate::switch_node::host(service, b, listener, shutdown))
            }
            Kind::Builtin(b) if b.protocol == warren_node::config::Protocol::Agents => {
                let registry = self.registrar.as_ref().map(|r| r.link());
                Some(crate::agents_node::host(service, b, listener, shutdown, registry))
            }
            _ => crate::up_registry::host(service, listener, shutdown),
        }
    }
}

/// `warren status`.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let addr = match &args.status {
        Some(text) => warren_node::toml_config::status_addr(text).map_err(anyhow::Error::msg)?,
        None => Some(StatusAddr::Unix(warren_node::toml_config::default_status_path())),
    };
    let mut text = String::new();
    match addr.context("status is off")? {
        StatusAddr::Unix(path) => {
            warren_node::toml_config::private_socket_dir(&path)?;
            std::os::unix::net::UnixStream::connect(&path)
                .with_context(|| format!("no node answers on {} (is `warren up` running?)", path.display()))?
                .read_to_string(&mut text)?
        }
        StatusAddr::Tcp(addr) => std::net::TcpStream::connect(addr)
            .with_context(|| format!("no node answers on {addr}"))?
            .read_to_string(&mut text)?,
    };
    print!("{text}");
    Ok(())
}
