//! Builtin services: a warren protocol served by `warren_models` on its own thread, with the
//! listener the node bound, until the node triggers its [`Shutdown`].

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use warren_models::udp::serve_udp_until;
use warren_models::{ServeConfig, Shutdown, serve_until};
use warren_proto::{DatagramService, Limits, Service as Protocol};

use crate::Hooks;
use crate::config::{Builtin, Protocol as Name, Service, Transport};
use crate::gate::Admission;

/// A builtin service running on its thread.
#[derive(Debug)]
pub struct Running {
    /// Stops it: sessions get `handle_shutdown` and their output is flushed.
    pub shutdown: Arc<Shutdown>,
    /// Its thread.
    pub thread: JoinHandle<()>,
    /// Its access rules and their counters, when it has any.
    pub admission: Option<Arc<Admission>>,
}

/// The socket a builtin serves.
#[derive(Debug)]
pub enum Socket {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
}

/// What each protocol takes beyond its [`Limits`]; the defaults are the course's.
#[derive(Debug, Default)]
pub struct Settings {
    /// Timeouts and sizes, for the protocols that take them.
    pub limits: Limits,
    /// `pingpong`'s delay and hit counter.
    pub pingpong: warren_proto::pingpong::Options,
    /// `timeserver`'s blocking call.
    pub timeserver: warren_proto::timeserver::TimeServer,
    /// `http`: the service, built by the caller (document root, cookie key, limits).
    pub http: Option<warren_proto::http::Http>,
    /// `relay`: the relay, with its backend.
    pub relay: Option<warren_proto::relay::Relay>,
    /// `handoff`: the front, with its target.
    pub handoff: Option<warren_proto::handoff::Front>,
}

/// What to do with a protocol's service once [`dispatch`] has built it, whatever its type.
pub trait Serve {
    /// What serving returns.
    type Output;
    /// Serve a stream protocol.
    fn tcp<S: Protocol>(self, service: S) -> Self::Output;
    /// Serve a datagram protocol.
    fn udp<D: DatagramService>(self, service: D) -> Self::Output;
}

/// The one table from protocol to service, for the node and `warren serve` alike: builds
/// `protocol`'s service for `transport` and hands it to `serve`. `None` when the protocol has
/// no form there: no UDP form, `http` without its service, or the registry, the object server,
/// the switch and the agent host (hosted outside this crate: see [`crate::Hooks::host`]).
pub fn dispatch<R: Serve>(protocol: Name, transport: Transport, settings: Settings, serve: R) -> Option<R::Output> {
    use warren_proto::{chargen::Chargen, daytime::Daytime, discard::Discard, echo::Echo, time::Time};
    let limits = settings.limits;
    if transport == Transport::Udp {
        return Some(match protocol {
            Name::Echo => serve.udp(Echo { limits }),
            Name::Discard => serve.udp(Discard { limits }),
            Name::Daytime => serve.udp(Daytime),
            Name::Time => serve.udp(Time),
            Name::Chargen => serve.udp(Chargen),
            _ => return None,
        });
    }
    Some(match protocol {
        Name::Echo => serve.tcp(Echo { limits }),
        Name::Discard => serve.tcp(Discard { limits }),
        Name::Daytime => serve.tcp(Daytime),
        Name::Time => serve.tcp(Time),
        Name::Chargen => serve.tcp(Chargen),
        Name::Timeserver => serve.tcp(settings.timeserver),
        Name::Pingpong => serve.tcp(warren_proto::pingpong::PingPong { limits, options: settings.pingpong }),
        Name::Chat => serve.tcp(warren_proto::chat::Chat { limits }),
        Name::Http => serve.tcp(settings.http?),
        Name::Relay => serve.tcp(settings.relay?),
        Name::Handoff => serve.tcp(settings.handoff?),
        Name::Oob => serve.tcp(warren_proto::oob::Oob { limits }),
        Name::Registry | Name::Objects | Name::Switch | Name::Agents => return None,
    })
}

/// Start `service`, a `builtin`, on `socket`; `hooks` host the protocols this crate does not.
pub fn start(service: &Service, builtin: &Builtin, socket: Socket, hooks: &mut dyn Hooks) -> std::io::Result<Running> {
    let shutdown = Arc::new(Shutdown::new()?);
    if matches!(builtin.protocol, Name::Registry | Name::Objects | Name::Switch | Name::Agents) {
        let name = builtin.protocol.name();
        let Socket::Tcp(listener) = socket else { return Err(std::io::Error::other(format!("{name} is TCP only"))) };
        return match hooks.host(service, listener, shutdown.clone()) {
            Some(thread) => Ok(Running { shutdown, thread: thread?, admission: None }),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("this node cannot host the {name} builtin (`warren up` can)"),
            )),
        };
    }
    let o = &builtin.options;
    let mut config = ServeConfig::for_model(builtin.model);
    if let Some(threads) = o.threads {
        config = config.with_threads(builtin.model, threads);
    }
    if let Some(max) = o.max_conns {
        config.max_conns = max;
    }
    // `instances` and the other xinetd rules are the gate's, as for exec services.
    let admission = Some(Arc::new(Admission::for_service(service)));
    config.gate = admission.clone().map(|a| a as Arc<dyn warren_models::accept::Gate>);
    let mut settings = Settings::default();
    if let Some(idle) = o.idle_timeout {
        settings.limits.idle_timeout = idle;
    }
    if builtin.protocol == Name::Http {
        let root = match &o.root {
            Some(root) => root.clone(),
            None => crate::site::default_root()?,
        };
        let options = warren_docroot::DocRootOptions { dotfiles: o.dotfiles, ..Default::default() };
        let docs = warren_docroot::DocRoot::new(&root, options)
            .map_err(|e| std::io::Error::new(e.kind(), format!("document root {}: {e}", root.display())))?;
        let mut http = warren_proto::http::Http::new(Arc::new(docs));
        http.access_log = o.access_log;
        if builtin.model.forks() {
            // The processes count together, so that any of them answers /metrics for all.
            let slots = warren_models::activity::shared_slots(warren_proto::http::HttpMetrics::SLOTS)?;
            http.metrics = warren_proto::http::HttpMetrics::in_slots(slots);
        }
        if let Some(idle) = o.idle_timeout {
            http.limits.idle_timeout = idle;
        }
        settings.http = Some(http);
    }
    settings.relay = o.backend.map(warren_proto::relay::Relay::new);
    settings.handoff = o.to.as_ref().map(|to| {
        let to = warren_proto::HandOffTarget::new(to.clone());
        warren_proto::handoff::Front::new(to, warren_proto::handoff::Peek::Line)
    });
    if builtin.protocol == Name::Oob {
        config.urgent = oob_urgent(builtin.model)?;
    }
    let transport = match socket {
        Socket::Tcp(_) => Transport::Tcp,
        Socket::Udp(_) => Transport::Udp,
    };
    let host = InNode { name: service.name.clone(), model: builtin.model, config, socket, shutdown, admission };
    dispatch(builtin.protocol, transport, settings, host).unwrap_or_else(|| {
        Err(std::io::Error::other(format!("builtin {} has no {} form", builtin.protocol.name(), transport.name())))
    })
}

/// How `oob` is served under `model`: urgent data out of line, as `oobrecv` takes it; an error
/// naming the models that can when this one cannot arm urgent data.
pub fn oob_urgent(model: warren_models::Model) -> std::io::Result<warren_models::UrgentMode> {
    if model.arms_urgent() {
        return Ok(warren_models::UrgentMode::OutOfLine);
    }
    let able: Vec<&str> = warren_models::Model::ALL.iter().filter(|m| m.arms_urgent()).map(|m| m.name()).collect();
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("oob needs a model that arms TCP urgent data ({}); {model} does not", able.join(", ")),
    ))
}

/// Serves a builtin on a thread of the node until its shutdown triggers.
struct InNode {
    name: String,
    model: warren_models::Model,
    config: ServeConfig,
    socket: Socket,
    shutdown: Arc<Shutdown>,
    admission: Option<Arc<Admission>>,
}

impl Serve for InNode {
    type Output = std::io::Result<Running>;

    fn tcp<S: Protocol>(self, service: S) -> Self::Output {
        let Socket::Tcp(listener) = self.socket else { unreachable!("dispatch serves TCP on TCP sockets") };
        let stop = self.shutdown.clone();
        let (model, config) = (self.model, self.config);
        spawn(&self.name, self.shutdown, self.admission, move || {
            serve_until(model, service, listener, &config, stop).map(drop)
        })
    }

    fn udp<D: DatagramService>(self, service: D) -> Self::Output {
        let Socket::Udp(socket) = self.socket else { unreachable!("dispatch serves UDP on UDP sockets") };
        let (model, config, stop) = (self.model, self.config, self.shutdown.clone());
        spawn(&self.name, self.shutdown, self.admission, move || udp(model, service, socket, &config, stop))
    }
}

fn udp<D: DatagramService>(
    model: warren_models::Model,
    service: D,
    socket: UdpSocket,
    config: &ServeConfig,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()> {
    serve_udp_until(model, service, socket, config, shutdown).map(drop)
}

fn spawn(
    name: &str,
    shutdown: Arc<Shutdown>,
    admission: Option<Arc<Admission>>,
    serve: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<Running> {
    let label = name.to_string();
    let thread = std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        if let Err(e) = serve() {
            tracing::error!(service = %label, "builtin stopped: {e}");
        }
    })?;
    Ok(Running { shutdown, thread, admission })
}
