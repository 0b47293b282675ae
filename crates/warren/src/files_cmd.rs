//! `warren files`: the stateful file server (`serve`) and its clients (`get`, `put`, `ls`,
//! `stat`, `rm`, `cancel`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_fileserver::{Cache, Connection, DiskStore, FileJournal, FileLimits, FileService, LeaseHub, Source};
use warren_models::{Model, ServeConfig, UrgentMode};

/// How long a client waits for any connect, read or write.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    pub command: FilesCommand,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Serve the files under --root (uploads are durable; leases and callbacks survive a crash).
    Serve(FilesServeArgs),
    /// Fetch a file through the local cache (served from it while its lease lasts).
    Get {
        server: SocketAddr,
        path: String,
        /// Write the file here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The cache directory [default: $XDG_CACHE_HOME/warren/files, else ~/.cache/warren/files].
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Upload a local file; prints its upload id first (for `warren files cancel`).
    Put {
        server: SocketAddr,
        local: PathBuf,
        path: String,
        /// The upload id, 16 hex digits [default: random].
        #[arg(long, value_parser = parse_id)]
        id: Option<u64>,
    },
    /// List a directory.
    Ls { server: SocketAddr, path: Option<String> },
    /// Describe a file or directory.
    Stat { server: SocketAddr, path: String },
    /// Delete a file.
    Rm { server: SocketAddr, path: String },
    /// Cancel an upload through the server's control endpoint.
    Cancel {
        control: SocketAddr,
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct FilesServeArgs {
    /// The directory served; the server keeps its journal and partial uploads in its .warren/.
    #[arg(long)]
    pub root: PathBuf,
    /// Server model (the control endpoint and urgent data need thread, pool, event, green or
    /// hybrid; urgent data is armed under iterative, thread, pool, event, fork and prefork).
    #[arg(long, short = 'm', default_value = "thread")]
    pub model: Model,
    /// Address of the data endpoint.
    #[arg(long, short = 'l', default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address of the control endpoint, where uploads are cancelled.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// pool: worker threads [default: 4]; event: helper threads [default: 4]; hybrid: runtime threads.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// How long a client may serve its cached copy without asking.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub lease: Duration,
    /// Bytes per second one upload may take in (0: no limit); beyond it the client's window fills.
    #[arg(long, default_value_t = 0)]
    pub upload_rate: u64,
    /// The largest upload, in bytes [default: 1 TiB].
    #[arg(long)]
    pub max_upload: Option<u64>,
    /// Receive buffer of each data connection, in bytes (SO_RCVBUF; 0: the kernel's autotuning).
    /// Small enough that a full window reopens after a short read, so an urgent byte that
    /// cancels an upload gets through within milliseconds; large enough for loopback and LAN
    /// speed (docs/files.md).
    #[arg(long, default_value_t = warren_fileserver::net::DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
    /// Keep the urgent byte in the stream (SO_OOBINLINE) rather than out of line.
    #[arg(long)]
    pub oob_inline: bool,
    /// Close a connection idle this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub idle_timeout: Duration,
    /// Log level: 0 errors only, 1 every event.
    #[arg(long, short = 'd')]
    pub debug: Option<u8>,
}

fn parse_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("an upload id is 16 hex digits: {e}"))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn run(args: &FilesArgs) -> anyhow::Result<()> {
    match &args.command {
        FilesCommand::Serve(args) => serve(args),
        FilesCommand::Get { server, path, output, cache } => get(*server, path, output.as_deref(), cache.clone()),
        FilesCommand::Put { server, local, path, id } => put(*server, local, path, *id),
        FilesCommand::Ls { server, path } => {
            let (entries, truncated) = connect(*server)?.list(path.as_deref().unwrap_or("/"))?;
            for e in entries {
                println!("{}{:>14}  {}", if e.is_dir { 'd' } else { '-' }, e.size, e.name);
            }
            if truncated {
                println!("(more entries than one answer holds)");
            }
            Ok(())
        }
        FilesCommand::Stat { server, path } => {
            let meta = connect(*server)?.stat(path)?;
            let kind = if meta.is_dir { "directory" } else { "file" };
            println!(
                "{path}: {kind}, {} bytes, version {:016x}, modified {} ms",
                meta.size, meta.version, meta.modified_ms
            );
            Ok(())
        }
        FilesCommand::Rm { server, path } => Ok(connect(*server)?.delete(path)?),
        FilesCommand::Cancel { control, id } => {
            let mut conn = connect(*control)?;
            conn.send(&warren_fileserver::Request::Cancel { id: *id })?;
            println!("{:?}", conn.reply()?);
            Ok(())
        }
    }
}

fn connect(addr: SocketAddr) -> anyhow::Result<Connection> {
    Connection::connect(addr, CLIENT_TIMEOUT).with_context(|| format!("cannot connect to {addr}"))
}

fn serve(args: &FilesServeArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(args.debug);
    let store = DiskStore::open(&args.root).with_context(|| format!("root {}", args.root.display()))?;
    let journal_path = store.state_dir().join("leases.journal");
    let (journal, records) =
        FileJournal::open(&journal_path).with_context(|| format!("lease journal {}", journal_path.display()))?;
    let hub = LeaseHub::new(Box::new(journal), records, args.lease, (Instant::now(), unix_ms(SystemTime::now())));
    let (held, owed) = hub.counts();
    tracing::info!(target: "warren", "files: recovered {held} leases and {owed} owed callbacks");
    let mut limits =
        FileLimits { upload_rate: args.upload_rate, idle_timeout: args.idle_timeout, ..FileLimits::default() };
    if let Some(max) = args.max_upload {
        limits.max_upload = max;
    }
    let service = FileService::new(Arc::new(store), hub, limits);
    // fork and prefork serve from processes of their own: a control thread here could not
    // reach their uploads (and they must fork before any thread exists).
    let control = if matches!(args.model, Model::Fork | Model::Prefork) {
        None
    } else {
        let listener = std::net::TcpListener::bind(args.control)
            .with_context(|| format!("cannot listen on {} for the control endpoint", args.control))?;
        let addr = listener.local_addr()?;
        serve_control(listener, service.uploads.clone())?;
        Some(addr)
    };
    let listener = crate::serve::listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    // On the listener, before any connection: accepted sockets inherit it, and the window
    // scale in the SYN-ACK is chosen from it. Why a bounded buffer: warren_fileserver::net.
    warren_fileserver::net::set_recv_buffer(&listener, args.recv_buffer)
        .with_context(|| format!("cannot set a receive buffer of {} bytes", args.recv_buffer))?;
    let addr = listener.local_addr()?;
    let urgent = if args.oob_inline { UrgentMode::Inline } else { UrgentMode::OutOfLine };
    let mut config = ServeConfig { urgent, ..ServeConfig::for_model(args.model) };
    if let Some(threads) = args.threads {
        config = config.with_threads(args.model, threads);
    }
    let model = args.model;
    let report = warren_models::serve(model, service, listener, &config, || {
        let control = control.map_or_else(|| "no control endpoint".to_owned(), |c| format!("control {c}"));
        println!("warren: serving files (tcp, {control}) under {model} on {addr}");
        let _ = std::io::stdout().flush();
    })?;
    if let Some(hub) = &report.hub_report {
        println!("{hub}");
    }
    println!("warren: stopped: {} connections served, {} refused", report.accepted, report.refused);
    Ok(())
}

/// Serve the control endpoint on a thread of its own, under the `event` model (one thread for
/// every control connection, no helpers: a cancel does no blocking work) at a raised priority.
/// It lives as long as the process.
fn serve_control(listener: std::net::TcpListener, uploads: Arc<warren_fileserver::Uploads>) -> anyhow::Result<()> {
    let config = ServeConfig { helpers: 0, ..ServeConfig::for_model(Model::Event) };
    let stop = Arc::new(warren_models::Shutdown::new()?);
    std::thread::Builder::new().name("warren-control".into()).spawn(move || {
        warren_fileserver::raise_priority();
        let service = warren_fileserver::ControlService { uploads };
        if let Err(e) = warren_models::serve_until(Model::Event, service, listener, &config, stop) {
            tracing::error!(target: "warren", "control endpoint stopped: {e}");
        }
    })?;
    Ok(())
}

fn default_cache() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?).join(".cache")
        }
    };
    Ok(base.join("warren/files"))
}

fn get(server: SocketAddr, path: &str, output: Option<&std::path::Path>, cache: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match cache {
        Some(dir) => dir,
        None => default_cache()?,
    };
    let mut cache = Cache::open(&dir).with_context(|| format!("cache {}", dir.display()))?;
    let mut conn = connect(server)?;
    let (file, source) = warren_fileserver::fetch(&mut conn, &mut cache, path, || unix_ms(SystemTime::now()))?;
    let how = match source {
        Source::Cache => "from the cache (lease valid)",
        Source::Revalidated => "from the cache (revalidated)",
        Source::Fetched => "fetched",
    };
    eprintln!("warren: {path}: {how}");
    let data = std::fs::read(&file).with_context(|| format!("cached copy {}", file.display()))?;
    match output {
        Some(out) => std::fs::write(out, data).with_context(|| format!("cannot write {}", out.display())),
        None => Ok(std::io::stdout().write_all(&data)?),
    }
}

fn put(server: SocketAddr, local: &std::path::Path, path: &str, id: Option<u64>) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
    let size = file.metadata()?.len();
    let id = match id {
        Some(id) => id,
        None => {
            // The id is what a cancel names: unguessable, so nobody else can cancel the upload.
            let mut bytes = [0; 8];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for an upload id: {e}"))?;
            u64::from_le_bytes(bytes)
        }
    };
    eprintln!("warren: upload id {id:016x}");
    let version = connect(server)?.put(id, path, size, &mut file)?;
    eprintln!("warren: {path}: {size} bytes stored, version {version:016x}");
    Ok(())
}
