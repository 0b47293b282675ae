//! `warren objects`: the object server (`serve`) and its administration (`add`, `rm`, `ls`,
//! `classes`); `warren call`: call any object's method with JSON arguments. See docs/objects.md.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use warren_models::{Model, ServeConfig, Shutdown};
use warren_objects::examples::classes;
use warren_objects::{
    ADMIN_OBJECT, Admin, HttpObjectService, ObjectAdminClient, ObjectLimits, ObjectService, ObjectSpec, Objects,
    PostgresStore, SqliteStore, Store,
};
use warren_rpc::{Connection, RawCall, Target};

use crate::registry_cmd::{self, Conn};

/// The object server's default address (beside the registry's 7390).
pub const DEFAULT_ADDR: &str = "127.0.0.1:7391";

#[derive(Debug, Args)]
pub struct ObjectsArgs {
    #[command(subcommand)]
    pub command: ObjectsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ObjectsCommand {
    /// Serve objects: the course's examples, and those added at run time.
    Serve(Box<ObjectsServeArgs>),
    /// Add an object of a class (`warren objects classes` lists them).
    Add {
        #[command(flatten)]
        admin: AdminConn,
        /// Its name (case-insensitive, case-preserving).
        name: String,
        #[arg(long)]
        class: String,
        /// per-object[:QUEUE], per-invocation[:MAX], pool[:THREADS[:QUEUE]], on-demand[:IDLE[:QUEUE]].
        #[arg(long, default_value = "per-object")]
        policy: String,
        /// Keep it, and its state, in the server's store across restarts.
        #[arg(long)]
        persistent: bool,
    },
    /// Remove an object (a persistent one's state goes with it).
    Rm {
        #[command(flatten)]
        admin: AdminConn,
        /// The object's name.
        name: String,
    },
    /// List the objects: name, class, policy, lifespan, calls.
    Ls {
        #[command(flatten)]
        admin: AdminConn,
    },
    /// List the classes objects can be made of.
    Classes {
        #[command(flatten)]
        admin: AdminConn,
    },
}

/// Which object server, and the admin token for changes.
#[derive(Debug, Args)]
pub struct AdminConn {
    /// The object server [default: $WARREN_OBJECTS, else 127.0.0.1:7391].
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// A file holding the admin token [default: the server's, $XDG_STATE_HOME/warren/objects/admin.token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Present the token in this file, for a server started with --callers-token-file.
    #[arg(long)]
    pub callers_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ObjectsServeArgs {
    /// Address of the binary protocol.
    #[arg(long, short = 'l', default_value = DEFAULT_ADDR)]
    pub listen: SocketAddr,
    /// Address of the JSON-over-HTTP front (`POST /v1/objects/NAME/METHOD`); none by default.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Where persistent objects live: sqlite:PATH, postgres://USER[:PASSWORD]@HOST:PORT/DB (to
    /// share objects between servers), or none [default: sqlite:DATA/objects.db].
    #[arg(long)]
    pub store: Option<String>,
    /// Directory of the store and the admin token, made private (0700)
    /// [default: $XDG_STATE_HOME/warren/objects].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Server model of the connections (fork and prefork would give each client its own copy
    /// of the objects: refused).
    #[arg(long, short = 'm', default_value = "event")]
    pub model: Model,
    /// pool: worker threads; event: helper threads; hybrid: runtime threads.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// The admin token's file (made, 0600, if missing) [default: DATA/admin.token].
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve only what is added: not the course's HelloServer, NiftyObjectServer, AsyncServer
    /// and RMIThreadServer.
    #[arg(long)]
    pub bare: bool,
    /// Admit only callers presenting the token in this file (made, 0600, if missing): an Auth
    /// frame, or `Authorization: Bearer` over HTTP. Without it any caller may call any object.
    #[arg(long)]
    pub callers_token_file: Option<PathBuf>,
    /// Calls in flight on one connection before the server stops reading it.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Register every object's name in this registry, with this server's address.
    #[arg(long)]
    pub registry: Option<SocketAddr>,
    /// The token that owns the registered names [default: $WARREN_TOKEN, else the node's].
    #[arg(long)]
    pub registry_token: Option<String>,
    /// Lease of each registered name (renewed at a third of it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub ttl: Duration,
    /// Log more (-d 2: debug); -d 0 logs errors only.
    #[arg(short = 'd', long)]
    pub debug: Option<u8>,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The object's name: resolved through the registry unless --server names the object server.
    pub name: String,
    /// The method, as the interface names it (`sayHello`).
    pub method: String,
    /// The arguments, each one JSON value (`'"text"'`, `42`, `'{"Squares":{"n":4}}'`).
    pub args: Vec<String>,
    /// The object server to call, skipping the registry.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Give up after this long (the object hears the deadline too).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub call_timeout: Duration,
    /// Present the token in this file, for a server started with --callers-token-file.
    #[arg(long)]
    pub callers_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: &ObjectsArgs) -> anyhow::Result<()> {
    match &args.command {
        ObjectsCommand::Serve(serve_args) => serve(serve_args),
        ObjectsCommand::Add { admin, name, class, policy, persistent } => {
            let spec = ObjectSpec {
                name: name.clone(),
                class: class.clone(),
                policy: policy.clone(),
                persistent: *persistent,
            };
            let token = admin.token()?;
            let info = admin.run(|a| async move { a.add(token, spec).await })?;
            println!("added {} ({}, {}, id {})", info.name, info.class, info.policy, info.id);
            Ok(())
        }
        ObjectsCommand::Rm { admin, name } => {
            let (token, name) = (admin.token()?, name.clone());
            let info = admin.run(|a| async move { a.rm(token, name).await })?;
            println!("removed {}", info.name);
            Ok(())
        }
        ObjectsCommand::Ls { admin } => {
            let list = admin.run(|a| async move { a.ls().await })?;
            println!(
                "{:<24} {:<10} {:<18} {:<22} {:<10} {:>8}",
                "NAME", "CLASS", "INTERFACE", "POLICY", "LIFESPAN", "CALLS"
            );
            for o in list {
                let lifespan = serde_json::to_value(o.lifespan)?.as_str().unwrap_or_default().to_owned();
                let interface = format!("{}/{}", o.interface, o.version);
                println!(
                    "{:<24} {:<10} {:<18} {:<22} {:<10} {:>8}",
                    o.name, o.class, interface, o.policy, lifespan, o.calls
                );
            }
            Ok(())
        }
        ObjectsCommand::Classes { admin } => {
            for c in admin.run(|a| async move { a.classes().await })? {
                println!("{:<10} {}/{}: {}", c.name, c.interface, c.version, c.about);
            }
            Ok(())
        }
    }
}

fn data_dir(args: &ObjectsServeArgs) -> anyhow::Result<PathBuf> {
    Ok(match &args.data {
        Some(dir) => dir.clone(),
        None => registry_cmd::state_dir()?.join("objects"),
    })
}

fn open_store(args: &ObjectsServeArgs, data: &std::path::Path) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let url = args.store.clone().unwrap_or_else(|| format!("sqlite:{}", data.join("objects.db").display()));
    if url == "none" {
        return Ok(None);
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let store = SqliteStore::open(std::path::Path::new(path)).with_context(|| format!("store {url}"))?;
        return Ok(Some(Arc::new(store)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::open(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Some(Arc::new(store)));
    }
    bail!("store {url:?}: sqlite:PATH, postgres://USER[:PASSWORD]@HOST:PORT/DB, or none")
}

/// An object server made from its flags, listening, not serving yet.
struct Prepared {
    objects: Arc<Objects>,
    limits: ObjectLimits,
    config: ServeConfig,
    listener: std::net::TcpListener,
    store_name: String,
    token_path: PathBuf,
    /// The JSON front, serving already on a thread of its own until `front_stop`.
    front: Option<(SocketAddr, std::thread::JoinHandle<()>)>,
    front_stop: Arc<Shutdown>,
}

/// Open the store, make the objects, bind `listener` (or `--listen`) and start the JSON front.
fn prepare(args: &ObjectsServeArgs, listener: Option<std::net::TcpListener>) -> anyhow::Result<Prepared> {
    if matches!(args.model, Model::Fork | Model::Prefork) {
        bail!(
            "--model {}: objects live in one process; a process per connection would give each client its own copy",
            args.model
        );
    }
    let data = data_dir(args)?;
    warren_registry_server::datadir::private_dir(&data)
        .with_context(|| format!("data directory {}", data.display()))?;
    let store = open_store(args, &data)?;
    let store_name = store.as_ref().map_or_else(|| "none".to_owned(), |s| s.describe());
    let objects =
        Objects::new(classes(), store).map_err(|e| anyhow::anyhow!("cannot serve the stored objects: {e}"))?;
    let token_path = args.admin_token_file.clone().unwrap_or_else(|| data.join("admin.token"));
    let token =
        registry_cmd::token_file(&token_path).with_context(|| format!("admin token {}", token_path.display()))?;
    Admin::install(&objects, Some(&token)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !args.bare {
        install_examples(&objects)?;
    }

    let listener = match listener {
        Some(listener) => listener,
        None => crate::serve::listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?,
    };
    objects.set_addr(listener.local_addr()?.to_string());
    let mut config = ServeConfig::for_model(args.model);
    if let Some(threads) = args.threads {
        config = config.with_threads(args.model, threads);
    }
    let callers = match &args.callers_token_file {
        Some(path) => {
            let token = registry_cmd::token_file(path).with_context(|| format!("callers' token {}", path.display()))?;
            Some(warren_objects::admin::hash(&token))
        }
        None => None,
    };
    let limits = ObjectLimits { max_in_flight: args.max_in_flight.max(1), callers, ..ObjectLimits::default() };

    // The JSON front runs beside, under the same model, until the binary side stops.
    let front_stop = Arc::new(Shutdown::new()?);
    let front = match args.http {
        Some(http) => {
            let listener = crate::serve::listen(http).with_context(|| format!("cannot listen on {http}"))?;
            let http_addr = listener.local_addr()?;
            let (service, config, stop, model) =
                (HttpObjectService::new(objects.clone(), callers), config.clone(), front_stop.clone(), args.model);
            let thread = std::thread::Builder::new().name("objects-http".into()).spawn(move || {
                if let Err(e) = warren_models::serve_until(model, service, listener, &config, stop) {
                    tracing::error!(target: "warren", "objects: the HTTP front stopped: {e}");
                }
            })?;
            Some((http_addr, thread))
        }
        None => None,
    };
    Ok(Prepared { objects, limits, config, listener, store_name, token_path, front, front_stop })
}

impl Prepared {
    /// Stop the JSON front once the binary side has stopped.
    fn stop_front(front: Option<(SocketAddr, std::thread::JoinHandle<()>)>, stop: &Shutdown) {
        stop.trigger();
        if let Some((_, thread)) = front {
            let _ = thread.join();
        }
    }
}

fn serve(args: &ObjectsServeArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(args.debug);
    let Prepared { objects, limits, config, listener, store_name, token_path, front, front_stop } =
        prepare(args, None)?;
    let addr = listener.local_addr()?;
    let registrar = match args.registry {
        Some(registry) => Some(crate::objects_registry::Registrar::start(
            &objects,
            tokio::sync::watch::channel(Some(registry)).1,
            args.registry_token.clone(),
            addr,
            front.as_ref().map(|(a, _)| *a),
            args.ttl,
        )?),
        None => None,
    };

    let count = objects.list().len();
    let model = args.model;
    let http = front.as_ref().map_or_else(String::new, |(a, _)| format!(", http {a}"));
    let service = ObjectService::new(objects, limits);
    let report = warren_models::serve(model, service, listener, &config, || {
        println!(
            "warren: serving {count} objects (store {store_name}{http}, admin token in {}) under {model} on {addr}",
            token_path.display()
        );
        let _ = std::io::stdout().flush();
    });
    Prepared::stop_front(front, &front_stop);
    drop(registrar);
    let report = report?;
    println!("warren: stopped: {} connections served, {} refused", report.accepted, report.refused);
    Ok(())
}

/// The `objects` builtin of `warren up`: `warren objects serve` on the node's `listener`, until
/// `shutdown`, with the builtin's `data` (default `$XDG_STATE_HOME/warren/node-objects`), `api`
/// (the JSON front), `model` and `threads`. With the node's `registry`, each object is
/// registered under its own name, as `--registry` does.
pub fn host(
    service: &warren_node::config::Service,
    builtin: &warren_node::config::Builtin,
    listener: std::net::TcpListener,
    shutdown: Arc<Shutdown>,
    registry: Option<crate::up_registry::Link>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut args: ObjectsServeArgs = crate::cli::defaults();
    let options = &builtin.options;
    args.data = match &options.data {
        Some(dir) => Some(dir.clone()),
        None => Some(registry_cmd::state_dir().map_err(std::io::Error::other)?.join("node-objects")),
    };
    args.http = options.api;
    args.model = builtin.model;
    args.threads = options.threads;
    let name = service.name.clone();
    std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        let served = prepare(&args, Some(listener)).and_then(|p| {
            let shown = crate::dashboard_hosted::Hosted::Objects(Arc::downgrade(&p.objects));
            crate::dashboard_hosted::add(&name, shown);
            let _registrar = match registry {
                Some(link) => {
                    let addr = crate::up_registry::reachable(p.listener.local_addr()?);
                    let http = p.front.as_ref().map(|(a, _)| crate::up_registry::reachable(*a));
                    Some(crate::objects_registry::Registrar::start(
                        &p.objects,
                        link.target,
                        Some(link.token),
                        addr,
                        http,
                        link.ttl,
                    )?)
                }
                None => None,
            };
            let service = ObjectService::new(p.objects, p.limits);
            let served = warren_models::serve_until(args.model, service, p.listener, &p.config, shutdown);
            Prepared::stop_front(p.front, &p.front_stop);
            served.map(drop).map_err(anyhow::Error::from)
        });
        if let Err(e) = served {
            eprintln!("warren: {name}: the object server stopped: {e:#}");
        }
    })
}

/// The course's objects under their course names.
fn install_examples(objects: &Arc<Objects>) -> anyhow::Result<()> {
    for (name, class, policy) in [
        ("HelloServer", "hello", "inline"),
        ("NiftyObjectServer", "nifty", "per-invocation"),
        ("AsyncServer", "async", "per-object"),
        ("RMIThreadServer", "threads", "pool:4:64"),
    ] {
        if objects.get(name).is_some() {
            continue;
        }
        let spec = ObjectSpec { name: name.into(), class: class.into(), policy: policy.into(), persistent: false };
        objects.add(&spec).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(())
}

impl AdminConn {
    fn server(&self) -> anyhow::Result<SocketAddr> {
        if let Some(server) = self.server {
            return Ok(server);
        }
        let text = std::env::var("WARREN_OBJECTS").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
        text.parse().with_context(|| format!("WARREN_OBJECTS={text:?}: not ADDR:PORT"))
    }

    fn token(&self) -> anyhow::Result<String> {
        let path = match &self.token_file {
            Some(path) => path.clone(),
            None => registry_cmd::state_dir()?.join("objects/admin.token"),
        };
        let token = std::fs::read_to_string(&path).with_context(|| format!("admin token {}", path.display()))?;
        Ok(token.trim().to_owned())
    }

    /// Run `f` on the server's admin object.
    fn run<T, E: std::fmt::Display, F: Future<Output = Result<T, warren_rpc::CallError<E>>>>(
        &self,
        f: impl FnOnce(ObjectAdminClient) -> F,
    ) -> anyhow::Result<T> {
        let server = self.server()?;
        runtime()?.block_on(async {
            let conn = Connection::connect(server, Duration::from_secs(5))
                .await
                .with_context(|| format!("cannot reach the object server at {server}"))?;
            if let Some(path) = &self.callers_token_file {
                let token =
                    std::fs::read_to_string(path).with_context(|| format!("callers' token {}", path.display()))?;
                conn.authenticate(token.trim()).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            let admin = ObjectAdminClient::new(Target::on(&conn, ADMIN_OBJECT).with_timeout(Duration::from_secs(10)));
            f(admin).await.map_err(|e| match e {
                warren_rpc::CallError::App(e) => anyhow::anyhow!("{e}"),
                warren_rpc::CallError::Rpc(e) => anyhow::anyhow!("{e}"),
            })
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `warren call NAME METHOD [JSON-ARGS…]`.
pub fn call(args: &CallArgs) -> anyhow::Result<()> {
    let mut values = Vec::new();
    for (i, text) in args.args.iter().enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("argument {} ({text:?}) is not JSON", i + 1))?;
        values.push(value);
    }
    runtime()?.block_on(async {
        let server = match args.server {
            Some(server) => server,
            None => resolve(&args.conn, &args.name).await?,
        };
        let conn = Connection::connect(server, args.conn.timeout)
            .await
            .with_context(|| format!("cannot reach the object server at {server}"))?;
        if let Some(path) = &args.callers_token_file {
            let token = std::fs::read_to_string(path).with_context(|| format!("callers' token {}", path.display()))?;
            conn.authenticate(token.trim()).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let raw = RawCall {
            object: args.name.clone(),
            interface: String::new(),
            version: 0,
            method: args.method.clone(),
            args: serde_json::to_vec(&values)?,
            json: true,
            timeout: Some(args.call_timeout),
            idempotent: false,
        };
        match conn.call(raw).await {
            Ok(json) => {
                println!("{}", String::from_utf8_lossy(&json));
                Ok(())
            }
            Err(warren_rpc::Failure::App(json)) => bail!("{} failed: {}", args.method, String::from_utf8_lossy(&json)),
            Err(warren_rpc::Failure::Rpc(e)) => bail!("{e}"),
        }
    })
}

/// The first TCP endpoint registered under `name`.
async fn resolve(conn: &Conn, name: &str) -> anyhow::Result<SocketAddr> {
    let registered = warren_registry::Name::new(name.to_owned())?;
    let client = conn.connect().await?;
    let (_, entry) = conn.ask(client.lookup(&registered)).await?;
    entry
        .endpoints
        .iter()
        .find(|e| e.transport == warren_registry::Transport::Tcp)
        .map(|e| SocketAddr::new(e.addr, e.port))
        .with_context(|| format!("{name} has no TCP endpoint in the registry"))
}
