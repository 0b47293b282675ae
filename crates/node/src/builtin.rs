//! Builtin services: a warren protocol served by `warren_models` on its own thread, with the
//! listener the node bound, until the node triggers its [`Shutdown`].

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use warren_models::udp::serve_udp_until;
use warren_models::{ServeConfig, Shutdown, serve_until};
use warren_proto::{DatagramService, Limits, Service as Protocol};

use crate::Hooks;
use crate::config::{Builtin, Protocol as Name, Service};

/// A builtin service running on its thread.
#[derive(Debug)]
pub struct Running {
    /// Stops it: sessions get `handle_shutdown` and their output is flushed.
    pub shutdown: Arc<Shutdown>,
    /// Its thread.
    pub thread: JoinHandle<()>,
}

/// The socket a builtin serves.
#[derive(Debug)]
pub enum Socket {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
}

/// Start `service`, a `builtin`, on `socket`; `hooks` host the protocols this crate does not.
pub fn start(service: &Service, builtin: &Builtin, socket: Socket, hooks: &mut dyn Hooks) -> std::io::Result<Running> {
    let (name, instances) = (service.name.as_str(), service.limits.instances);
    let shutdown = Arc::new(Shutdown::new()?);
    let o = &builtin.options;
    let mut config = ServeConfig::default();
    if let Some(threads) = o.threads {
        config.threads = threads;
    } else if builtin.model == warren_models::Model::Event {
        config.threads = 0;
    }
    if let Some(max) = o.max_conns.or(instances.map(|i| i as usize)) {
        config.max_conns = max;
    }
    let mut limits = Limits::default();
    if let Some(idle) = o.idle_timeout {
        limits.idle_timeout = idle;
    }
    let (model, stop) = (builtin.model, shutdown.clone());
    let label = name.to_string();
    let socket = match (builtin.protocol, socket) {
        (protocol, Socket::Udp(socket)) => {
            return spawn(&label, shutdown, move || match protocol {
                Name::Echo => udp(model, warren_proto::echo::Echo { limits }, socket, &config, stop),
                Name::Discard => udp(model, warren_proto::discard::Discard { limits }, socket, &config, stop),
                Name::Daytime => udp(model, warren_proto::daytime::Daytime, socket, &config, stop),
                Name::Time => udp(model, warren_proto::time::Time, socket, &config, stop),
                _ => udp(model, warren_proto::chargen::Chargen, socket, &config, stop),
            });
        }
        (_, Socket::Tcp(listener)) => listener,
    };
    match builtin.protocol {
        Name::Echo => tcp(&label, model, warren_proto::echo::Echo { limits }, socket, config, shutdown),
        Name::Discard => tcp(&label, model, warren_proto::discard::Discard { limits }, socket, config, shutdown),
        Name::Daytime => tcp(&label, model, warren_proto::daytime::Daytime, socket, config, shutdown),
        Name::Time => tcp(&label, model, warren_proto::time::Time, socket, config, shutdown),
        Name::Chargen => tcp(&label, model, warren_proto::chargen::Chargen, socket, config, shutdown),
        Name::Chat => tcp(&label, model, warren_proto::chat::Chat { limits }, socket, config, shutdown),
        Name::Pingpong => {
            let service = warren_proto::pingpong::PingPong { limits, options: Default::default() };
            tcp(&label, model, service, socket, config, shutdown)
        }
        Name::Registry => match hooks.host(service, socket, shutdown.clone()) {
            Some(thread) => Ok(Running { shutdown, thread: thread? }),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "this node cannot host the registry (`warren up` can); run `warren registry`",
            )),
        },
        Name::Http => {
            let root = o.root.as_deref().unwrap_or(std::path::Path::new("."));
            let docs = warren_files::DocRoot::new(root, warren_files::DocRootOptions::default())
                .map_err(|e| std::io::Error::new(e.kind(), format!("document root {}: {e}", root.display())))?;
            let mut http = warren_proto::http::Http::new(Arc::new(docs));
            if let Some(idle) = o.idle_timeout {
                http.limits.idle_timeout = idle;
            }
            tcp(&label, model, http, socket, config, shutdown)
        }
    }
}

fn tcp<S: Protocol>(
    name: &str,
    model: warren_models::Model,
    service: S,
    listener: TcpListener,
    config: ServeConfig,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<Running> {
    let stop = shutdown.clone();
    spawn(name, shutdown, move || serve_until(model, service, listener, &config, stop).map(drop))
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
    serve: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<Running> {
    let label = name.to_string();
    let thread = std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        if let Err(e) = serve() {
            tracing::error!(service = %label, "builtin stopped: {e}");
        }
    })?;
    Ok(Running { shutdown, thread })
}
