//! `warren files`: the stateful file server (`serve`) and its clients (`get`, `put`, `ls`,
//! `stat`, `rm`, `cancel`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_bench::progress;
use warren_fileserver::wire::Right;
use warren_fileserver::{Access, Cache, Connection, DiskStore, FileJournal, FileLimits, FileService, LeaseHub, Source};
use warren_models::{Model, ServeConfig, UrgentMode};

/// How long a client waits for any read or write once the server has answered.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    pub command: FilesCommand,
    /// Clients: present the token in this file (made by `warren files token`) before asking.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Clients: give up on a server that has not connected and answered within this long (a
    /// peer that is not a file server); later reads and writes wait up to 30 s.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Serve the files under --root (uploads are durable; leases and callbacks survive a crash).
    Serve(FilesServeArgs),
    /// Fetch a file through the local cache (served from it while its lease lasts).
    Get {
        /// The file server, ADDR:PORT.
        server: SocketAddr,
        /// The file's path on the server.
        path: String,
        /// Write the file here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The cache directory [default: $XDG_CACHE_HOME/warren/files, else ~/.cache/warren/files].
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Upload a local file; prints the id the server gave it first (for `warren files cancel`).
    Put {
        /// The file server, ADDR:PORT.
        server: SocketAddr,
        /// The local file to send.
        local: PathBuf,
        /// Where it goes on the server.
        path: String,
    },
    /// List a directory.
    Ls {
        /// The file server, ADDR:PORT.
        server: SocketAddr,
        /// The directory [default: the root].
        path: Option<String>,
    },
    /// Describe a file or directory.
    Stat {
        /// The file server, ADDR:PORT.
        server: SocketAddr,
        /// The path on the server.
        path: String,
    },
    /// Delete a file.
    Rm {
        /// The file server, ADDR:PORT.
        server: SocketAddr,
        /// The file's path on the server.
        path: String,
    },
    /// Cancel an upload through the server's control endpoint.
    Cancel {
        /// The server's control endpoint, ADDR:PORT (its --control address).
        control: SocketAddr,
        /// The upload's id, as `warren files put` printed it.
        #[arg(value_parser = parse_id)]
        id: u64,
    },
    /// Make a credential: prints the token on stdout (give it to the client, in a file for
    /// --token-file) and its line for the server's --tokens file on stderr.
    Token {
        /// What it allows: read, or write (which includes read).
        #[arg(long, default_value = "read", value_parser = parse_right)]
        right: Right,
        /// Its name in logs and quotas [default: the start of its hash].
        #[arg(long)]
        name: Option<String>,
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
    /// The largest upload, in bytes [default: 4 GiB].
    #[arg(long)]
    pub max_upload: Option<u64>,
    /// Upload bytes one client (a token, or an anonymous address) may have in flight at once,
    /// as declared [default: 8 GiB].
    #[arg(long)]
    pub max_in_flight: Option<u64>,
    /// Credentials, one a line: `read|write sha256:HEX [name]` (see `warren files token`).
    /// Refused if group or others may write it.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// What a client without a credential may do: none, read or write.
    #[arg(long, default_value = "read", value_parser = parse_right)]
    pub anonymous: Right,
    /// Data connections beyond this many are refused (`Busy`) [default: the model's].
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// Control connections beyond this many are refused (`Busy`).
    #[arg(long, default_value_t = 64)]
    pub control_max_conns: usize,
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
    /// Close a connection whose frame, or upload body, has had no byte for this long (the
    /// partial upload is removed).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub read_timeout: Duration,
    /// Log level: 0 errors only, 1 every event.
    #[arg(long, short = 'd')]
    pub debug: Option<u8>,
}

fn parse_right(s: &str) -> Result<Right, String> {
    match s {
        "none" => Ok(Right::None),
        "read" => Ok(Right::Read),
        "write" => Ok(Right::Write),
        _ => Err(format!("{s:?}: a right is none, read or write")),
    }
}

fn parse_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("an upload id is 16 hex digits: {e}"))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn run(args: &FilesArgs) -> anyhow::Result<()> {
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    let connect = |addr: SocketAddr| -> anyhow::Result<Connection> {
        let mut conn = connect(addr, args.timeout)?;
        if let Some(token) = &token {
            conn.auth(token)?;
        }
        Ok(conn)
    };
    match &args.command {
        FilesCommand::Serve(args) => serve(args),
        FilesCommand::Get { server, path, output, cache } => {
            get(connect(*server)?, path, output.as_deref(), cache.clone())
        }
        FilesCommand::Put { server, local, path } => put(connect(*server)?, local, path),
        FilesCommand::Ls { server, path } => {
            let (entries, truncated) = connect(*server)?.list(path.as_deref().unwrap_or("/"))?;
            for e in entries {
                println!("{}{:>14}  {}", if e.is_dir { 'd' } else { '-' }, e.size, e.name);
            }
            if truncated {
                println!("(more entries than one listing takes)");
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
            let mut conn = self::connect(*control, args.timeout)?;
            conn.send(&warren_fileserver::Request::Cancel { id: *id })?;
            println!("{:?}", conn.reply()?);
            Ok(())
        }
        FilesCommand::Token { right, name } => {
            anyhow::ensure!(*right != Right::None, "a token with no right is no use");
            let (token, hash) = warren_fileserver::auth::new_token()?;
            let right = if *right == Right::Write { "write" } else { "read" };
            println!("{token}");
            eprintln!("{right} {hash}{}", name.as_ref().map_or(String::new(), |n| format!(" {n}")));
            Ok(())
        }
    }
}

/// The token in `path`, surrounding whitespace trimmed.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "token file {} is empty", path.display());
    Ok(token.to_owned())
}

/// What the server trusts: its client-key secret (made on first start), the anonymous right,
/// and the credentials of `--tokens`.
fn access(args: &FilesServeArgs, state_dir: &std::path::Path) -> anyhow::Result<Access> {
    let secret_path = state_dir.join("client-keys.secret");
    let secret = warren_fileserver::auth::load_or_create_secret(&secret_path)
        .with_context(|| format!("client-key secret {}", secret_path.display()))?;
    let mut access = Access::new(args.anonymous, secret);
    if let Some(path) = &args.tokens {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).with_context(|| format!("tokens file {}", path.display()))?;
        // As sshd's StrictModes: whoever may write the file may give themselves any right.
        anyhow::ensure!(
            meta.mode() & 0o022 == 0,
            "tokens file {} may be written by group or others (chmod go-w)",
            path.display()
        );
        let text = std::fs::read_to_string(path).with_context(|| format!("tokens file {}", path.display()))?;
        access.add_tokens(&text).with_context(|| format!("tokens file {}", path.display()))?;
    }
    Ok(access)
}

fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Connection> {
    Connection::connect_expecting(addr, timeout, CLIENT_IO_TIMEOUT).with_context(|| format!("cannot connect to {addr}"))
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
    let mut limits = FileLimits {
        upload_rate: args.upload_rate,
        idle_timeout: args.idle_timeout,
        read_timeout: args.read_timeout,
        ..FileLimits::default()
    };
    if let Some(max) = args.max_upload {
        limits.max_upload = max;
    }
    if let Some(max) = args.max_in_flight {
        limits.max_in_flight = max;
    }
    let access = access(args, &store.state_dir())?;
    let service = FileService::new(Arc::new(store), hub, limits, access);
    // fork and prefork serve from processes of their own: a control thread here could not
    // reach their uploads (and they must fork before any thread exists).
    let control = if matches!(args.model, Model::Fork | Model::Prefork) {
        None
    } else {
        let listener = std::net::TcpListener::bind(args.control)
            .with_context(|| format!("cannot listen on {} for the control endpoint", args.control))?;
        let addr = listener.local_addr()?;
        serve_control(listener, service.uploads.clone(), args.control_max_conns)?;
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
    if let Some(max) = args.max_conns {
        config.max_conns = max;
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
/// every control connection, no helpers: a cancel does no blocking work) at a raised priority,
/// with at most `max_conns` connections: beyond them one is answered `Busy` and closed, and
/// when descriptors run out the event loop's acceptor refuses with its reserve descriptor and
/// backs off instead of spinning. It lives as long as the process.
fn serve_control(
    listener: std::net::TcpListener,
    uploads: Arc<warren_fileserver::Uploads>,
    max_conns: usize,
) -> anyhow::Result<()> {
    let config = ServeConfig { helpers: 0, max_conns, ..ServeConfig::for_model(Model::Event) };
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

fn get(
    mut conn: Connection,
    path: &str,
    output: Option<&std::path::Path>,
    cache: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = match cache {
        Some(dir) => dir,
        None => default_cache()?,
    };
    let mut cache = Cache::open(&dir).with_context(|| format!("cache {}", dir.display()))?;
    // The client library reads the body into the cache itself, so the wait shows as a spinner;
    // the copy out of the cache then counts its bytes.
    let spinner = progress::spinner(&format!("fetching {path}"));
    let fetched = warren_fileserver::fetch(&mut conn, &mut cache, path, || unix_ms(SystemTime::now()));
    spinner.finish_and_clear();
    let (file, source) = fetched?;
    let how = match source {
        Source::Cache => "from the cache (lease valid)",
        Source::Revalidated => "from the cache (revalidated)",
        Source::Fetched => "fetched",
    };
    eprintln!("warren: {path}: {how}");
    let mut cached = std::fs::File::open(&file).with_context(|| format!("cached copy {}", file.display()))?;
    let bar = progress::bytes(cached.metadata()?.len(), path);
    let copied = match output {
        Some(out) => {
            let mut to = std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
            std::io::copy(&mut bar.wrap_read(&mut cached), &mut to)
                .with_context(|| format!("writing {}", out.display()))
        }
        None => Ok(std::io::copy(&mut bar.wrap_read(&mut cached), &mut std::io::stdout().lock())?),
    };
    bar.finish_and_clear();
    copied.map(drop)
}

fn put(mut conn: Connection, local: &std::path::Path, path: &str) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
    let size = file.metadata()?.len();
    let bar = progress::bytes(size, path);
    let uploaded = conn.put_announced(path, size, &mut bar.wrap_read(&mut file), |id| {
        bar.suspend(|| eprintln!("warren: upload id {id:016x}"));
    });
    bar.finish_and_clear();
    let version = uploaded?;
    eprintln!("warren: {path}: {size} bytes stored, version {version:016x}");
    Ok(())
}
