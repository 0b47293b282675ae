//! `warren switch`: the cluster switch. Each connection goes to a backend that
//! `warren-balance` chooses, relayed (`--mode relay`, the spine's relay session, splicing) or
//! handed off with its request head (`--mode handoff`, to a server process on this host), or
//! each request does (`--mode http`, the HTTP proxy session: `switch_http.rs`), under the event
//! model. A thread runs the active checks the pool asks for; SIGHUP reads the
//! backends again (`--backend` and `--backends-file`). See docs/switch.md.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use warren_balance::{Backend, BackendId, Change, CheckConfig, OutlierConfig, Policy, Pool, PoolConfig, Request};
use warren_models::{IdleConfig, Model, ServeConfig, ServeReport, Shutdown};
use warren_proto::HandOffTarget;
use warren_proto::handoff::{Front, Peek};
use warren_proto::pick::{Lease, Pick};
use warren_proto::proxy_header::ProxyVersion;
use warren_proto::relay::{Relay, Upstream};
use warren_registry::Name;

use crate::switch_metrics::{BackendRow, Meters, MetricsServer, SwitchStats};

/// How the switch passes a connection on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Relay the bytes both ways (NAT-style), spliced in the kernel.
    Relay,
    /// Read the request head, then pass the connection to a server process on this host.
    Handoff,
    /// Proxy HTTP/1.1: each request to a backend picked for it, over kept-alive connections.
    Http,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Relay => "relay",
            Mode::Handoff => "handoff",
            Mode::Http => "http",
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A backend: ADDR (relay, http) or a hand-off socket (handoff: a path, or @name), then
    /// optionally `,weight=N`, `,service=NAME` (repeatable), `,group=NAME` (http), `,drain`, and
    /// for relay backends `,proxy=v1` or `,proxy=v2` (a PROXY protocol header first). Repeat the
    /// flag for each backend.
    #[arg(long = "backend", value_name = "BACKEND")]
    pub backends: Vec<String>,
    /// A file of backends, one a line in --backend's form (`#` starts a comment), read at the
    /// start and again on SIGHUP: new lines are added, missing ones drained and then removed.
    #[arg(long, value_name = "PATH")]
    pub backends_file: Option<PathBuf>,
    /// A registry name whose endpoints are backends, followed without a reload as they join,
    /// leave or change (needs --registry). Repeatable.
    #[arg(long = "backend-name", value_name = "NAME")]
    pub backend_names: Vec<String>,
    /// The registry server that --backend-name names are looked up and watched in.
    #[arg(long, value_name = "ADDR")]
    pub registry: Option<SocketAddr>,
    /// round-robin, weighted, least-connections, power-of-two, service, load, lard or maglev.
    #[arg(long, default_value = "round-robin", value_parser = parse_policy)]
    pub policy: Policy,
    #[arg(long, value_enum, default_value = "relay")]
    pub mode: Mode,
    /// Time between active checks of a backend, and the longest a check may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub inter: Duration,
    /// Consecutive good checks that bring a backend back.
    #[arg(long, default_value_t = 2)]
    pub rise: u32,
    /// Consecutive failed checks that take a backend out.
    #[arg(long, default_value_t = 3)]
    pub fall: u32,
    /// Run no active checks.
    #[arg(long)]
    pub no_check: bool,
    /// Consecutive failed connections that eject a backend for a while (0: never).
    #[arg(long, default_value_t = 5)]
    pub eject_after: u32,
    /// Ramp a backend that comes up from 10 % to its full weight over this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub slow_start: Option<Duration>,
    /// relay, http: give up on a backend that does not accept within this long, and try another.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// handoff: read the first line, or a whole HTTP request head, before handing over.
    #[arg(long, default_value = "head", value_parser = ["line", "head"])]
    pub peek: String,
    #[command(flatten)]
    pub http: crate::switch_http::HttpArgs,
    /// Answer Prometheus metrics at http://ADDR/metrics, a listener of its own (port 0 picks
    /// one; the address is printed once the switch serves).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Log level: 0 errors only, 1 debug.
    #[arg(short = 'd', long)]
    pub debug: Option<u8>,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse().map_err(|e: warren_balance::ConfigError| e.to_string())
}

/// `warren switch`.
pub fn run(args: &SwitchArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(args.debug);
    check(args)?;
    let listener = crate::serve::listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let report = serve(args, listener, Until::Signal, None)?;
    crate::serve::finish(&report);
    Ok(())
}

/// How long a switch serves: until SIGINT or SIGTERM (`warren switch`, which then says it is
/// ready), or until the node that hosts it triggers its shutdown (the node says it is ready).
pub(crate) enum Until {
    Signal,
    Shutdown(Arc<Shutdown>),
}

/// The pool settings `args` give.
fn pool_config(args: &SwitchArgs) -> PoolConfig {
    PoolConfig {
        policy: args.policy,
        check: (!args.no_check).then_some(CheckConfig { inter: args.inter, rise: args.rise, fall: args.fall }),
        outlier: (args.eject_after > 0)
            .then_some(OutlierConfig { consecutive_failures: args.eject_after, ..OutlierConfig::default() }),
        slow_start: args.slow_start,
        ..PoolConfig::default()
    }
}

/// Everything in `args` that can be checked without listening or asking the registry: the
/// pool's settings, each backend line for the mode, the http mode's routes and groups. The
/// node checks a `builtin = "switch"` with it when its file loads.
pub(crate) fn check(args: &SwitchArgs) -> anyhow::Result<()> {
    Pool::new(pool_config(args))?;
    let specs = specs(args)?;
    for spec in &specs {
        match args.mode {
            Mode::Relay => _ = <Upstream as Target>::parse(&spec.name)?.with_options(spec)?,
            Mode::Http => _ = <SocketAddr as Target>::parse(&spec.name)?.with_options(spec)?,
            Mode::Handoff => _ = <HandOffTarget as Target>::parse(&spec.name)?.with_options(spec)?,
        }
    }
    if specs.is_empty() && args.backend_names.is_empty() {
        bail!("no backend: give --backend ADDR (or a --backends-file with at least one, or --backend-name)");
    }
    if !args.backend_names.is_empty() && args.registry.is_none() {
        bail!("--backend-name needs --registry ADDR, the registry to follow");
    }
    match args.mode {
        Mode::Http => crate::switch_http::check(args),
        _ => crate::switch_http::refuse_outside_http(args),
    }
}

/// Serves the switch `args` describe on `listener` until `until`; a node's service `shown_as`
/// is shown on the node's dashboard.
pub(crate) fn serve(
    args: &SwitchArgs,
    listener: TcpListener,
    until: Until,
    shown_as: Option<&str>,
) -> anyhow::Result<ServeReport> {
    let config = pool_config(args);
    let stats = SwitchStats::new(format!("{}, {}", args.mode, args.policy));
    if let Some(service) = shown_as {
        crate::dashboard_hosted::add(service, crate::dashboard_hosted::Hosted::Switch(Arc::downgrade(&stats)));
    }
    let metrics = match args.metrics {
        Some(addr) => {
            let listener =
                crate::serve::listen(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let local = listener.local_addr()?;
            Some((MetricsServer::start(listener, stats.clone())?, local))
        }
        None => None,
    };
    // Said after the readiness line, where a supervisor or a test looks for it.
    let metrics_at = metrics.as_ref().map(|(_, addr)| *addr);
    let say_metrics = move || {
        if let Some(addr) = metrics_at {
            println!("warren: switch: metrics on http://{addr}/metrics");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    };
    if args.mode == Mode::Http {
        return crate::switch_http::serve(args, &config, listener, until, &stats, say_metrics);
    }
    crate::switch_http::refuse_outside_http(args)?;
    let pool = Pool::new(config)?;
    let addr = listener.local_addr()?;
    let service = addr.port().to_string();
    let ready = |said: Option<SocketAddr>, switch: &dyn Fn(Option<SocketAddr>)| {
        switch(said);
        say_metrics();
    };
    Ok(match args.mode {
        Mode::Relay => {
            let switch = Arc::new(Switch::<Upstream>::start(pool, args, service, None, &stats)?);
            let mut relay = Relay::picking(switch.clone());
            relay.connect_timeout = args.connect_timeout;
            relay.local = Some(addr);
            serve_event(relay, listener, until, IdleConfig::default(), |said| {
                ready(said, &|said| switch.ready(args, said));
            })?
        }
        Mode::Handoff => {
            let switch = Arc::new(Switch::<HandOffTarget>::start(pool, args, "http".to_owned(), None, &stats)?);
            let peek = if args.peek == "head" { Peek::Head } else { Peek::Line };
            let front = Front::picking(switch.clone(), peek);
            serve_event(front, listener, until, IdleConfig::default(), |said| {
                ready(said, &|said| switch.ready(args, said));
            })?
        }
        Mode::Http => unreachable!("served above"),
    })
}

/// Serves `service` under the event model until `until`, keeping the idle backend connections
/// `idle` says; `ready` runs once it listens, and says so only when the switch runs on its own.
pub(crate) fn serve_event<S: warren_proto::Service>(
    service: S,
    listener: TcpListener,
    until: Until,
    idle: IdleConfig,
    ready: impl FnOnce(Option<SocketAddr>),
) -> std::io::Result<ServeReport> {
    let config = ServeConfig { idle, ..ServeConfig::for_model(Model::Event) };
    match until {
        Until::Signal => {
            let addr = listener.local_addr()?;
            warren_models::serve(Model::Event, service, listener, &config, || ready(Some(addr)))
        }
        Until::Shutdown(shutdown) => {
            ready(None);
            warren_models::serve_until(Model::Event, service, listener, &config, shutdown)
        }
    }
}

/// What a backend is in one mode: parsed from its name, and checked.
pub(crate) trait Target: Clone + Send + Sync + fmt::Debug + fmt::Display + 'static {
    fn parse(name: &str) -> anyhow::Result<Self>;
    /// One active check: whether the backend takes a connection within `timeout`.
    fn check(&self, timeout: Duration) -> bool;
    /// The backend with its line's options that concern the mode; by default it takes none.
    fn with_options(self, spec: &Spec) -> anyhow::Result<Self> {
        if spec.proxy.is_some() {
            bail!("backend {:?}: proxy= applies to relay backends only", spec.name);
        }
        Ok(self)
    }
}

impl Target for Upstream {
    fn parse(name: &str) -> anyhow::Result<Self> {
        <SocketAddr as Target>::parse(name).map(Upstream::from)
    }

    fn check(&self, timeout: Duration) -> bool {
        self.addr.check(timeout)
    }

    fn with_options(self, spec: &Spec) -> anyhow::Result<Self> {
        Ok(Upstream { proxy: spec.proxy, ..self })
    }
}

impl Target for SocketAddr {
    fn parse(name: &str) -> anyhow::Result<Self> {
        name.parse().with_context(|| format!("backend {name:?}: want an address such as 127.0.0.1:8001"))
    }

    fn check(&self, timeout: Duration) -> bool {
        TcpStream::connect_timeout(self, timeout).is_ok()
    }
}

impl Target for HandOffTarget {
    fn parse(name: &str) -> anyhow::Result<Self> {
        if name.is_empty() || name == "@" {
            bail!("backend {name:?}: want a hand-off socket's path, or @name");
        }
        Ok(HandOffTarget::new(name))
    }

    /// Connecting a datagram socket to the receiver's address fails unless a receiver is bound
    /// there (the kernel answers at once, so no timeout is needed).
    fn check(&self, _: Duration) -> bool {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
        let path = self.0.to_string_lossy();
        let addr = match path.strip_prefix('@') {
            Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
            None => UnixAddr::from_pathname(&self.0),
        };
        addr.and_then(|addr| UnixDatagram::unbound()?.connect_addr(&addr)).is_ok()
    }
}

/// One line of `--backend` or of the backends file, or one registry endpoint.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    pub(crate) name: String,
    weight: u32,
    services: Vec<String>,
    /// The routing group (http mode); `None`: the default one.
    pub(crate) group: Option<String>,
    drain: bool,
    proxy: Option<ProxyVersion>,
}

fn parse_spec(line: &str) -> anyhow::Result<Spec> {
    let mut parts = line.split(',').map(str::trim);
    let name = parts.next().unwrap_or_default().to_owned();
    let mut spec = Spec { name, weight: 1, services: Vec::new(), group: None, drain: false, proxy: None };
    for part in parts {
        match part.split_once('=') {
            Some(("weight", w)) => {
                spec.weight = w.parse().with_context(|| format!("backend {line:?}: weight {w:?} is not a number"))?;
            }
            Some(("service", s)) if !s.is_empty() => spec.services.push(s.to_owned()),
            Some(("group", g)) if crate::switch_http::is_group_name(g) => spec.group = Some(g.to_owned()),
            Some(("proxy", v)) => {
                spec.proxy = Some(v.parse().map_err(|e: String| anyhow::anyhow!("backend {line:?}: {e}"))?);
            }
            None if part == "drain" => spec.drain = true,
            _ => bail!(
                "backend {line:?}: unknown option {part:?} (want weight=N, service=NAME, group=NAME, drain or proxy=v1|v2)"
            ),
        }
    }
    Ok(spec)
}

/// The pool and what each backend is, behind one lock: connections pick and release through
/// it; the check thread, the reload and the registry follower update it.
#[derive(Debug)]
struct Shared<T> {
    pool: Pool,
    targets: BTreeMap<BackendId, (String, T)>,
    /// The http mode's routing group this pool serves; `None`: every backend.
    group: Option<String>,
    /// The backends given by flags and file (replaced by a reload), and those found in the
    /// registry (replaced as it changes): the pool holds those of its group.
    statics: Vec<Spec>,
    found: Vec<(Spec, Option<f64>)>,
    /// Each backend's counters, which its leases hold.
    meters: BTreeMap<BackendId, Arc<Meters>>,
    /// Set when the switch stops (a node's service removed or reconfigured): the check thread
    /// ends at its next turn.
    stopped: bool,
}

impl<T> Shared<T> {
    /// Whether `spec` belongs in this pool: any does without a group; with one, those naming
    /// it, and those naming none for `default`.
    fn takes(&self, spec: &Spec) -> bool {
        self.group.as_ref().is_none_or(|g| spec.group.as_deref().unwrap_or(crate::switch_http::DEFAULT_GROUP) == g)
    }

    fn of_group(&self, specs: &[Spec]) -> Vec<Spec> {
        specs.iter().filter(|s| self.takes(s)).cloned().collect()
    }

    /// Every backend as the metrics show it at `now`.
    fn rows(&self, now: Instant) -> Vec<BackendRow> {
        let group = self.group.as_deref().unwrap_or(crate::switch_http::DEFAULT_GROUP);
        let row = |(id, (name, _)): (&BackendId, &(String, T))| {
            Some(BackendRow {
                group: group.to_owned(),
                name: name.clone(),
                state: crate::switch_metrics::state_name(self.pool.state(*id, now)?),
                weight: self.pool.backend(*id)?.weight,
                load: self.pool.load(*id)?,
                in_flight: self.pool.open(*id)?,
                meters: self.meters.get(id)?.clone(),
            })
        };
        self.targets.iter().filter_map(row).collect()
    }
}

/// The switch's [`Pick`]: the shared pool, and the service its listener stands for. Dropping
/// it stops its threads (reload, checks, registry follower), so a node can replace it.
pub(crate) struct Switch<T> {
    shared: Arc<Mutex<Shared<T>>>,
    service: String,
    stats: Arc<SwitchStats>,
    reload: signal_hook::iterator::Handle,
    _follower: Option<crate::switch_registry::Follower>,
}

impl<T: fmt::Debug> fmt::Debug for Switch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch").field("shared", &self.shared).field("service", &self.service).finish_non_exhaustive()
    }
}

impl<T> Drop for Switch<T> {
    fn drop(&mut self) {
        lock(&self.shared).stopped = true;
        self.reload.close();
    }
}

impl<T: Target> Switch<T> {
    /// Loads the backends (of routing group `group` only, when given: `default` takes those
    /// with none), follows the registry names if any, and starts the reload thread; the checks
    /// start when the switch is ready ([`Switch::ready`]).
    /// Its backends' rows join `stats`.
    pub(crate) fn start(
        pool: Pool,
        args: &SwitchArgs,
        service: String,
        group: Option<&str>,
        stats: &Arc<SwitchStats>,
    ) -> anyhow::Result<Self> {
        let group = group.map(str::to_owned);
        let shared = Arc::new(Mutex::new(Shared {
            pool,
            targets: BTreeMap::new(),
            group,
            statics: Vec::new(),
            found: Vec::new(),
            meters: BTreeMap::new(),
            stopped: false,
        }));
        // Weak: the stats may outlive this pool (a node replaces its switch), never keep it.
        let seen = Arc::downgrade(&shared);
        stats.add_group(Box::new(move |now| seen.upgrade().map(|s| lock(&s).rows(now)).unwrap_or_default()));
        let specs = specs(args)?;
        if lock(&shared).of_group(&specs).is_empty() && args.backend_names.is_empty() {
            bail!("no backend: give --backend ADDR (or a --backends-file with at least one, or --backend-name)");
        }
        set_statics(&mut lock(&shared), specs)?;
        let mut follower = None;
        if !args.backend_names.is_empty() {
            let registry = args.registry.context("--backend-name needs --registry ADDR, the registry to follow")?;
            let names = args.backend_names.iter().map(|n| Name::new(n.clone())).collect::<Result<Vec<_>, _>>()?;
            let handoff = args.mode == Mode::Handoff;
            let found = shared.clone();
            follower = Some(crate::switch_registry::follow(registry, names, handoff, move |update| {
                set_found(&mut lock(&found), &update);
            })?);
        }
        // Always, file or not: SIGHUP's default action would end the switch, and an operator
        // sends it expecting a reload, as nginx's.
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        let reload = signals.handle();
        let (reloader, flags, file) = (shared.clone(), args.backends.clone(), args.backends_file.clone());
        std::thread::Builder::new().name("switch-reload".into()).spawn(move || {
            for _ in signals.forever() {
                let reloaded =
                    read_specs(&flags, file.as_ref()).and_then(|specs| set_statics(&mut lock(&reloader), specs));
                match reloaded {
                    Ok(()) => println!("warren: switch: backends reloaded"),
                    Err(e) => println!("warren: switch: reload refused, backends unchanged: {e:#}"),
                }
            }
        })?;
        Ok(Self { shared, service, stats: stats.clone(), reload, _follower: follower })
    }
}

impl<T: Target> Switch<T> {
    /// The switch listens: says so (at `addr`, when it runs on its own), then starts the
    /// checks, so that every change of state a check finds is told after the readiness line.
    fn ready(&self, args: &SwitchArgs, addr: Option<SocketAddr>) {
        if let Some(addr) = addr {
            say_ready(args, addr);
        }
        self.start_checks();
    }

    /// Starts the thread that runs the active checks.
    pub(crate) fn start_checks(&self) {
        let checker = self.shared.clone();
        let spawned = std::thread::Builder::new().name("switch-checks".into()).spawn(move || check_forever(&checker));
        if let Err(e) = spawned {
            println!("warren: switch: no active checks, cannot start their thread: {e}");
        }
    }
}

/// The line that says the switch listens.
pub(crate) fn say_ready(args: &SwitchArgs, addr: SocketAddr) {
    println!("warren: serving switch ({}, {}) under event on {addr}", args.mode, args.policy);
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

pub(crate) fn specs(args: &SwitchArgs) -> anyhow::Result<Vec<Spec>> {
    read_specs(&args.backends, args.backends_file.as_ref())
}

fn read_specs(flags: &[String], file: Option<&PathBuf>) -> anyhow::Result<Vec<Spec>> {
    let mut lines = flags.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("backends file {}", path.display()))?;
        // `route` lines are the http mode's (switch_http.rs).
        let kept = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty() && !crate::switch_http::is_route_line(l));
        lines.extend(kept.map(str::to_owned));
    }
    let specs = lines.iter().map(|l| parse_spec(l)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("backend {} is given twice", twice[0]);
    }
    Ok(specs)
}

/// A reload's (or the start's) backends: with those found in the registry, the pool's.
fn set_statics<T: Target>(shared: &mut Shared<T>, specs: Vec<Spec>) -> anyhow::Result<()> {
    let before = std::mem::replace(&mut shared.statics, specs);
    let applied = apply_all(shared);
    if applied.is_err() {
        shared.statics = before;
    }
    applied
}

/// What the registry holds now for the followed names. An endpoint whose metadata does not
/// make a backend is skipped with a line saying why, not allowed to stop the others.
fn set_found<T: Target>(shared: &mut Shared<T>, update: &crate::switch_registry::Update) {
    let mut found = Vec::new();
    for one in update {
        let checked = parse_spec(&one.line).and_then(|spec| T::parse(&spec.name)?.with_options(&spec).map(|_| spec));
        match checked {
            Ok(spec) => found.push((spec, one.load)),
            Err(e) => println!("warren: switch: registry endpoint skipped: {e:#}"),
        }
    }
    shared.found = found;
    if let Err(e) = apply_all(shared) {
        println!("warren: switch: registry change not applied: {e:#}");
    }
}

/// The pool made to hold the static backends and the registry's (a static line wins over a
/// registry endpoint of the same name), and each reported load passed on.
fn apply_all<T: Target>(shared: &mut Shared<T>) -> anyhow::Result<()> {
    let mut specs = shared.of_group(&shared.statics);
    for (spec, _) in &shared.found {
        if shared.takes(spec) && !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec.clone());
        }
    }
    apply(shared, specs)?;
    let loads: Vec<(String, f64)> =
        shared.found.iter().filter_map(|(spec, load)| Some((spec.name.clone(), (*load)?))).collect();
    for (name, load) in loads {
        let id = shared.targets.iter().find(|(_, (n, _))| *n == name).map(|(id, _)| *id);
        if let Some(id) = id
            && let Err(e) = shared.pool.set_load(id, load)
        {
            println!("warren: switch: backend {name}: load not taken: {e}");
        }
    }
    Ok(())
}

/// Makes the pool hold exactly `specs`: new ones added, missing ones removed (they drain
/// first), the rest reconfigured and drained or put back as marked. Every name is parsed before
/// anything changes, so a bad line changes nothing.
fn apply<T: Target>(shared: &mut Shared<T>, specs: Vec<Spec>) -> anyhow::Result<()> {
    let parsed =
        specs.into_iter().map(|s| Ok((T::parse(&s.name)?.with_options(&s)?, s))).collect::<anyhow::Result<Vec<_>>>()?;
    let now = Instant::now();
    let known: BTreeMap<String, BackendId> = shared.targets.iter().map(|(id, (name, _))| (name.clone(), *id)).collect();
    for (name, id) in &known {
        if !parsed.iter().any(|(_, s)| &s.name == name) {
            shared.pool.remove(*id);
            shared.targets.remove(id);
            shared.meters.remove(id);
        }
    }
    for (target, spec) in parsed {
        let id = match known.get(&spec.name) {
            Some(&id) => {
                shared.pool.reconfigure(id, spec.weight, spec.services);
                // Options such as proxy= may have changed: new connections see the new ones.
                shared.targets.insert(id, (spec.name, target));
                id
            }
            None => {
                let backend = Backend { name: spec.name.clone(), weight: spec.weight, services: spec.services };
                let id = shared.pool.add(backend, now);
                shared.targets.insert(id, (spec.name, target));
                shared.meters.insert(id, Arc::default());
                id
            }
        };
        if spec.drain {
            shared.pool.drain(id);
        } else {
            shared.pool.undrain(id, now);
        }
    }
    Ok(())
}

fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // A panic elsewhere leaves the pool consistent (every change is one call), so go on.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the checks the pool asks for, each on its own thread so that one slow backend does not
/// delay the others, and reports every change of state.
fn check_forever<T: Target>(shared: &Mutex<Shared<T>>) {
    let inter = lock(shared).pool.config().check.map(|c| c.inter);
    let Some(inter) = inter else { return };
    loop {
        let now = Instant::now();
        let due: Vec<(BackendId, T)> = {
            let mut s = lock(shared);
            if s.stopped {
                return;
            }
            for (id, change) in s.pool.handle_timeout(now) {
                announce(&s, id, change);
            }
            std::iter::from_fn(|| s.pool.poll_check(now))
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|id| Some((id, s.targets.get(&id)?.1.clone())))
                .collect()
        };
        let results: Vec<(BackendId, bool)> = std::thread::scope(|scope| {
            let running: Vec<_> = due.iter().map(|(id, t)| (*id, scope.spawn(move || t.check(inter)))).collect();
            running.into_iter().map(|(id, h)| (id, h.join().unwrap_or(false))).collect()
        });
        let next = {
            let mut s = lock(shared);
            for (id, ok) in results {
                if let Some(change) = s.pool.check_done(id, Instant::now(), ok) {
                    announce(&s, id, change);
                }
            }
            s.pool.poll_timeout()
        };
        let wait = next.map_or(inter, |at| at.saturating_duration_since(Instant::now()));
        std::thread::sleep(wait.clamp(Duration::from_millis(1), inter));
    }
}

fn announce<T>(shared: &Shared<T>, id: BackendId, change: Change) {
    let name = shared.targets.get(&id).map_or("a removed backend", |(name, _)| name.as_str());
    let state = match change {
        Change::Up => "up",
        Change::Down => "down",
    };
    println!("warren: switch: backend {name} is {state}");
}

impl<T: Target> Pick<T> for Switch<T> {
    fn pick(&self, peer: Option<SocketAddr>, head: &[u8], now: Instant) -> Option<Box<dyn Lease<T>>> {
        let key = peer.map(|p| p.ip().to_string());
        let request =
            Request { key: key.as_deref().map(str::as_bytes), target: url(head), service: Some(&self.service) };
        let mut s = lock(&self.shared);
        let Some(id) = s.pool.pick(&request, now) else {
            self.stats.unavailable();
            return None;
        };
        let (Some((_, target)), Some(meters)) = (s.targets.get(&id), s.meters.get(&id)) else {
            s.pool.release(id);
            self.stats.unavailable();
            return None;
        };
        meters.picked();
        let (target, meters) = (target.clone(), meters.clone());
        Some(Box::new(Held { shared: self.shared.clone(), id, target, meters, picked: now }))
    }
}

/// The request target of an HTTP request line (`GET /a/b HTTP/1.1` gives `/a/b`), what LARD
/// keeps on one backend.
fn url(head: &[u8]) -> Option<&[u8]> {
    let line = head.split(|&b| b == b'\n').next()?;
    line.split(|&b| b == b' ').nth(1).filter(|t| !t.is_empty())
}

/// One connection's backend: reports go to the pool, and the drop releases it.
#[derive(Debug)]
struct Held<T> {
    shared: Arc<Mutex<Shared<T>>>,
    id: BackendId,
    target: T,
    meters: Arc<Meters>,
    picked: Instant,
}

impl<T: Target> Lease<T> for Held<T> {
    fn target(&self) -> &T {
        &self.target
    }

    fn report(&mut self, now: Instant, ok: bool) {
        let mut s = lock(&self.shared);
        if s.pool.report(self.id, now, ok) {
            println!("warren: switch: backend {} ejected after failed connections", self.target);
        }
    }

    fn connected(&mut self) {
        self.meters.connected();
    }

    fn failed(&mut self, why: warren_proto::pick::Failure) {
        self.meters.failed(why);
    }

    fn moved(&mut self, to_target: u64, from_target: u64) {
        self.meters.moved(to_target, from_target);
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        self.meters.released(self.picked.elapsed());
        lock(&self.shared).pool.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_lines_parse_and_bad_ones_say_why() {
        let spec = parse_spec("127.0.0.1:8001, weight=3, service=http, group=static, drain").unwrap();
        let group = Some("static".into());
        assert_eq!(
            spec,
            Spec {
                name: "127.0.0.1:8001".into(),
                weight: 3,
                services: vec!["http".into()],
                group,
                drain: true,
                proxy: None
            }
        );
        assert_eq!(parse_spec("a,proxy=v2").unwrap().proxy, Some(ProxyVersion::V2));
        assert!(parse_spec("a,proxy=v3").unwrap_err().to_string().contains("want v1 or v2"));
        let spec = parse_spec("@x,proxy=v1").unwrap();
        let refused = <HandOffTarget as Target>::parse("@x").unwrap().with_options(&spec).unwrap_err();
        assert!(refused.to_string().contains("relay backends only"));
        assert!(parse_spec("a,weight=x").unwrap_err().to_string().contains("not a number"));
        assert!(parse_spec("a,colour=red").unwrap_err().to_string().contains("unknown option"));
        assert!(<SocketAddr as Target>::parse("localhost").is_err());
        assert_eq!(url(b"GET /a/b HTTP/1.1\r\nHost: x\r\n\r\n"), Some(&b"/a/b"[..]));
        assert_eq!(url(b"hello\n"), None);
    }
}
