//! `builtin = "agents"` in `warren.toml`: the node hosts the Wasm agent host through
//! [`warren_node::Hooks::host`], as it hosts the registry, so that the node crate does not carry
//! wasmtime. The service speaks the agent protocol (docs/protocols.md): `warren agents run`
//! ships a module to it, `warren agents fetch` takes one from it.
//!
//! Keys (docs/node.md): `trusted_keys` (a file of public keys), `allow_unsigned` (no by
//! default), `fuel`, `wall_ms`, `memory_mib` (each agent's limits), `max_agents` (at once),
//! `modules` (a directory of modules the node offers for fetching), `max_snapshot_mib` (the
//! largest snapshot an arriving agent may bring), and what agents may be granted beyond the
//! clock and the log: `kv_buckets` (`NAME:unattached` or `NAME:fastened` each) and `files`
//! (names of files in `files_dir`).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};
use warren_agents::session::AgentService;
use warren_agents::{Attachment, Host, HostConfig, Limits, Trust, Unsigned};
use warren_models::{ServeConfig, Shutdown, serve_until};
use warren_node::Config;
use warren_node::config::{Builtin, Kind, Protocol, Service};

/// What a `builtin = "agents"` service's keys describe.
#[derive(Debug)]
struct Settings {
    host: HostConfig,
    /// Each agent's limits.
    job: Limits,
    /// Modules the node installs at start, for clients to fetch.
    modules: Option<std::path::PathBuf>,
    /// The largest snapshot an arriving agent may have, in bytes.
    max_snapshot: usize,
}

/// The one word of `key`.
fn one<'a>(key: &str, words: &'a [String]) -> anyhow::Result<&'a str> {
    match words {
        [word] => Ok(word),
        _ => bail!("{key}: want one value"),
    }
}

/// A number of `key` in `1..=most`.
fn number(key: &str, words: &[String], most: u64) -> anyhow::Result<u64> {
    let word = one(key, words)?;
    match word.parse::<u64>() {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => bail!("{key}: want a whole number from 1 to {most}, found {word:?}"),
    }
}

/// Reads the keys of `builtin`; every value is checked here, so that a mistake stops the start
/// or refuses a reload.
fn settings(builtin: &Builtin) -> anyhow::Result<Settings> {
    let ceiling = HostConfig::default().ceiling;
    let (mut host, mut job, mut modules) = (HostConfig::default(), Limits::default(), None);
    let mut max_snapshot = warren_agents::roster::MAX_SNAPSHOT;
    let (mut trust, mut unsigned) = (Trust::new(), Unsigned::Refuse);
    let (mut files, mut files_dir) = (Vec::new(), None);
    for (key, words) in &builtin.options.agents {
        match key.as_str() {
            "trusted_keys" => {
                let path = one(key, words)?;
                let text = std::fs::read_to_string(path).with_context(|| format!("trusted_keys {path}"))?;
                for public in warren_agents::keys::parse_trusted(&text)
                    .map_err(|e| anyhow::anyhow!("trusted_keys {path}: {e}"))?
                {
                    trust = trust.trust_key(public).with_context(|| format!("trusted_keys {path}"))?;
                }
            }
            "allow_unsigned" => {
                unsigned = match one(key, words)? {
                    "yes" => Unsigned::Allow,
                    "no" => Unsigned::Refuse,
                    other => bail!("allow_unsigned: want true or false, found {other:?}"),
                }
            }
            "fuel" => job.fuel = number(key, words, ceiling.fuel)?,
            "wall_ms" => job.wall = Duration::from_millis(number(key, words, ceiling.wall.as_millis() as u64)?),
            "memory_mib" => job.memory = number(key, words, (ceiling.memory >> 20) as u64)? as usize * (1 << 20),
            "max_agents" => host.max_agents = number(key, words, 4096)? as usize,
            "modules" => modules = Some(one(key, words)?.into()),
            "kv_buckets" => {
                for word in words {
                    let (name, attachment) = bucket(word).with_context(|| format!("kv_buckets: {word:?}"))?;
                    host.offers.buckets.insert(name, attachment);
                }
            }
            "files" => files = words.clone(),
            "files_dir" => files_dir = Some(std::path::PathBuf::from(one(key, words)?)),
            "max_snapshot_mib" => {
                let most = (warren_agents::roster::MAX_SNAPSHOT >> 20) as u64;
                max_snapshot = number(key, words, most)? as usize * (1 << 20);
            }
            other => bail!("{other}: not a key of the agents builtin"),
        }
    }
    match (files_dir, files.is_empty()) {
        (None, false) => bail!("files: needs files_dir, the directory they are in"),
        (dir, _) => {
            for name in files {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    bail!("files: {name:?} is not a file name (no slashes; the files are in files_dir)");
                }
                let path = dir.as_deref().expect("checked above").join(&name);
                host.offers.files.insert(name, path);
            }
        }
    }
    host.trust = trust.unsigned(unsigned);
    Ok(Settings { host, job, modules, max_snapshot })
}

/// `NAME:unattached` or `NAME:fastened` (fastened when the attachment is left out).
fn bucket(word: &str) -> anyhow::Result<(String, Attachment)> {
    let (name, attachment) = word.split_once(':').unwrap_or((word, "fastened"));
    let attachment: Attachment = attachment.parse().map_err(anyhow::Error::msg)?;
    if attachment == Attachment::Fixed {
        bail!("a bucket is unattached or fastened; files are the fixed resources");
    }
    if name.is_empty() {
        bail!("a bucket needs a name");
    }
    Ok((name.to_owned(), attachment))
}

/// Checks every agents service of `config` as the file loads.
pub fn check(config: &Config) -> anyhow::Result<()> {
    for service in &config.services {
        if let Kind::Builtin(b) = &service.kind
            && b.protocol == Protocol::Agents
        {
            let settings = settings(b).with_context(|| format!("service {:?}: builtin agents", service.name))?;
            if let Some(dir) = &settings.modules {
                modules_in(dir).with_context(|| format!("service {:?}: modules", service.name))?;
            }
        }
    }
    Ok(())
}

/// The module files of `dir`: `*.wasm` and `*.wat`, in name order.
fn modules_in(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("wasm" | "wat")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Builds the host of `settings`, with the modules of its directory installed; each installed
/// module's id is printed, since clients fetch it by id.
fn build(name: &str, settings: Settings) -> anyhow::Result<Host> {
    let host = Host::new(settings.host).map_err(|e| anyhow::anyhow!("the agent host: {e:#}"))?;
    for path in settings.modules.as_deref().map(modules_in).transpose()?.unwrap_or_default() {
        let bytes = crate::agents_cmd::read_module(&path)?;
        let id = host.install(&bytes).with_context(|| format!("module {}", path.display()))?;
        println!("warren: {name}: offers {id} ({})", path.display());
    }
    Ok(host)
}

/// Serves agents `service` on `listener`, on a thread of its own, until `shutdown`. Agents run
/// on the model's helpers (one per agent the host runs at once) or, under `thread`, on their
/// connection's thread. Hops may name their destination in `registry`, the node's.
pub fn host(
    service: &Service,
    builtin: &Builtin,
    listener: TcpListener,
    shutdown: Arc<Shutdown>,
    registry: Option<crate::up_registry::Link>,
) -> std::io::Result<JoinHandle<()>> {
    let fail = |e: anyhow::Error| std::io::Error::other(format!("{e:#}"));
    let settings = settings(builtin).map_err(fail)?;
    let (job, model, o, max_snapshot) = (settings.job, builtin.model, &builtin.options, settings.max_snapshot);
    let mut config = ServeConfig::for_model(model);
    config.helpers = settings.host.max_agents;
    if let Some(threads) = o.threads {
        config = config.with_threads(model, threads);
    }
    if let Some(max) = o.max_conns {
        config.max_conns = max;
    }
    let mut limits = warren_proto::Limits::default();
    if let Some(idle) = o.idle_timeout {
        limits.idle_timeout = idle;
    }
    let host = build(&service.name, settings).map_err(fail)?;
    // Global references name this address: other nodes call back here for what an agent left.
    let mut address = listener.local_addr()?;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    host.set_address(address.to_string());
    let resolve = crate::agents_resolve::resolver(registry);
    let agents = AgentService::with_resolver(Arc::new(host), limits, resolve).with_job_limits(job);
    agents.roster().limit_snapshots(max_snapshot);
    // The dashboard and the node's /metrics read the roster while it lives.
    crate::dashboard_hosted::add(
        &service.name,
        crate::dashboard_hosted::Hosted::Agents(Arc::downgrade(agents.roster())),
    );
    let name = service.name.clone();
    std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        if let Err(e) = serve_until(model, agents, listener, &config, shutdown) {
            println!("warren: {name}: agent host stopped: {e:#}");
        }
    })
}
