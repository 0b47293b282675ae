//! `warren agents`: remote evaluation (`run`: ship a module to a node, print the agent's
//! result), code on demand (`fetch`: take a module from a node by its hash, then `run --local`
//! it here in the same sandbox), and the operator's keys (`keygen`, `sign`, `id`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use warren_agents::keys::{format_signature, hex, parse_secret, parse_signature};
use warren_agents::session::execute;
use warren_agents::wire::{FRAMING, FileAsk, KvAsk, Request, Response, RunRequest, encode};
use warren_agents::{Host, HostConfig, Limits, ModuleId, ModuleSignature, Outcome, SigningKey, Trust, Unsigned};

use crate::registry_cmd::Conn;

/// How long a node may take to answer a run: its longest wall-time limit (10 s), compiling,
/// and room to spare.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: AgentsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Ship MODULE to NODE, run its entry there with ARGS, print the result (remote evaluation).
    Run(RunArgs),
    /// Fetch the module with id HASH from NODE into a file, checking its hash (code on demand).
    Fetch(FetchArgs),
    /// Make a signing key: FILE gets the secret key (mode 0600), FILE.pub the public key.
    Keygen {
        /// Where the secret key goes.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Sign MODULE with a secret key: writes MODULE.sig (or --out) and prints the module's id.
    Sign {
        /// The module (.wasm or .wat).
        module: PathBuf,
        /// The secret key, as `keygen` wrote it.
        #[arg(long)]
        key: PathBuf,
        /// Where the signature goes [default: MODULE.sig].
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Print MODULE's id: the SHA-256 of its WebAssembly bytes, by which nodes know it.
    Id {
        /// The module (.wasm or .wat).
        module: PathBuf,
    },
    /// Wait for a moving agent (ID = N@NODE, as `run --detach` prints it), following its hops,
    /// and print its result.
    Wait(crate::agents_move::WaitArgs),
    /// Move a running agent (ID = N@NODE) to NODE: it freezes at its next safe point and goes.
    Move(crate::agents_move::MoveArgs),
    /// List the agents NODE holds: id, module, hops, state, fuel used.
    Ls(crate::agents_move::LsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// NODE (a registry name, or ADDR:PORT) unless --local, then MODULE (.wasm or .wat), then
    /// the entry's arguments (as numbers of its parameter types).
    #[arg(required = true, allow_negative_numbers = true, value_name = "NODE MODULE ARGS")]
    pub words: Vec<String>,
    /// Run here, in the same sandbox and limits as a node's, with no NODE: for a module
    /// fetched by its hash, or your own.
    #[arg(long, conflicts_with_all = ["mobile", "detach"])]
    pub local: bool,
    /// Start it as an agent that may move (its module must import `warren.migrate`); wait
    /// for its result, following it from node to node.
    #[arg(long)]
    pub mobile: bool,
    /// As --mobile, but print the agent's ID (N@NODE) and return at once.
    #[arg(long)]
    pub detach: bool,
    /// The exported function to call.
    #[arg(long, default_value = "main")]
    pub entry: String,
    /// Sign the module with this secret key (made by `warren agents keygen`).
    #[arg(long, conflicts_with = "sig")]
    pub key: Option<PathBuf>,
    /// Send this signature (made by `warren agents sign`).
    #[arg(long)]
    pub sig: Option<PathBuf>,
    /// A file the agent reads with `input_read`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Grant the clock capability.
    #[arg(long)]
    pub clock: bool,
    /// Grant the log capability; log lines are printed on standard error.
    #[arg(long)]
    pub log: bool,
    /// Grant the kv capability on this bucket, one the node offers (`kv_buckets`).
    #[arg(long, value_name = "NAME")]
    pub kv: Option<String>,
    /// The bucket read-only: `kv_get` only.
    #[arg(long, requires = "kv")]
    pub kv_read_only: bool,
    /// How the agent is bound to its bucket: identifier, value or type.
    #[arg(long, requires = "kv", default_value = "identifier", value_name = "BINDING")]
    pub kv_bind: warren_agents::Binding,
    /// Grant the file capability on this file, one the node offers (`files`).
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
    /// How the agent is bound to its file: identifier, value or type.
    #[arg(long, requires = "file", default_value = "identifier", value_name = "BINDING")]
    pub file_bind: warren_agents::Binding,
    /// The action the agent asks for a resource whenever it moves, instead of its cell's
    /// default: KIND=ACTION (`kv` or `file`; `move`, `copy`, `ref` or `rebind`); repeatable.
    #[arg(long, value_name = "KIND=ACTION")]
    pub bind: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The node: a registry name, or ADDR:PORT.
    pub node: String,
    /// The module's id (64 hex digits).
    pub hash: String,
    /// Where the module goes.
    #[arg(short, long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: &AgentsArgs) -> anyhow::Result<()> {
    match &args.command {
        AgentsCommand::Run(run) => run_agent(run),
        AgentsCommand::Fetch(fetch) => fetch_module(fetch),
        AgentsCommand::Keygen { out } => keygen(out),
        AgentsCommand::Sign { module, key, out } => sign(module, key, out.as_deref()),
        AgentsCommand::Id { module } => {
            println!("{}", ModuleId::of(&read_module(module)?));
            Ok(())
        }
        AgentsCommand::Wait(wait) => crate::agents_move::wait(wait),
        AgentsCommand::Move(order) => crate::agents_move::order(order),
        AgentsCommand::Ls(ls) => crate::agents_move::list(ls),
    }
}

/// A module file's WebAssembly bytes: `.wat` text is compiled to binary first, so that its id
/// is the id of what runs.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("module {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "wat") {
        return wat::parse_bytes(&bytes)
            .map(|wasm| wasm.into_owned())
            .map_err(|e| anyhow::anyhow!("module {}: {e}", path.display()));
    }
    Ok(bytes)
}

pub fn secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("secret key {}", path.display()))?;
    parse_secret(&text).map_err(|e| anyhow::anyhow!("secret key {}: {e}", path.display()))
}

fn run_agent(args: &RunArgs) -> anyhow::Result<()> {
    let (node, rest) = match (args.local, args.words.as_slice()) {
        (true, words) => (None, words),
        (false, [node, rest @ ..]) => (Some(node.as_str()), rest),
        (false, []) => unreachable!("clap requires a word"),
    };
    let Some((module, params)) = rest.split_first() else {
        bail!("give the module to run after {}", if args.local { "--local" } else { "the node" });
    };
    let module = read_module(Path::new(module))?;
    let signature = match (&args.key, &args.sig) {
        (Some(key), _) => Some(ModuleSignature::sign(&ModuleId::of(&module), &secret_key(key)?)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("signature {}", path.display()))?;
            Some(parse_signature(&text).map_err(|e| anyhow::anyhow!("signature {}: {e}", path.display()))?)
        }
        (None, None) => None,
    };
    let input = match &args.input {
        Some(path) => std::fs::read(path).with_context(|| format!("input {}", path.display()))?,
        None => Vec::new(),
    };
    let request = RunRequest {
        module,
        signature: signature.map(|s| (s.key.to_vec(), s.signature.to_vec())),
        entry: args.entry.clone(),
        args: params.to_vec(),
        input,
        clock: args.clock,
        log: args.log,
        kv: args.kv.clone().map(|bucket| KvAsk { bucket, write: !args.kv_read_only, binding: args.kv_bind }),
        file: args.file.clone().map(|name| FileAsk { name, binding: args.file_bind }),
        bind: crate::agents_move::overrides(&args.bind)?,
    };
    if let (Some(node), true) = (node, args.mobile || args.detach) {
        return crate::agents_move::start(node_addr(node, &args.conn)?, request, args.detach);
    }
    let (response, place) = match node {
        None => {
            let spinner = warren_bench::progress::spinner("running the agent here");
            let response = run_here(request);
            spinner.finish_and_clear();
            (response?, "here".to_owned())
        }
        Some(node) => {
            let addr = node_addr(node, &args.conn)?;
            (ask(addr, &Request::Run(request))?, format!("on {node} ({addr})"))
        }
    };
    match response {
        Response::Done(outcome) => print_outcome(&outcome),
        Response::Refused(reason) => bail!("the agent did not run to its end {place}: {reason}"),
        _ => bail!("{place} answered a run with something else: not a warren agent host"),
    }
}

/// Runs `request` in a host of this process, with a node's default sandbox and limits. It
/// admits unsigned code: the module is the caller's own file, or one fetched by its hash.
fn run_here(request: RunRequest) -> anyhow::Result<Response> {
    let trust = Trust::new().unsigned(Unsigned::Allow);
    let host = Host::new(HostConfig { trust, ..HostConfig::default() }).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok(execute(&host, request, Limits::default()))
}

/// The output on standard output, then the results on one line; log lines on standard error.
pub fn print_outcome(outcome: &Outcome) -> anyhow::Result<()> {
    for line in &outcome.log {
        eprintln!("log: {line}");
    }
    if outcome.log_dropped > 0 {
        eprintln!("log: {} more lines dropped past the limit", outcome.log_dropped);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&outcome.output)?;
    if !outcome.results.is_empty() {
        let results: Vec<String> = outcome.results.iter().map(|r| r.to_string()).collect();
        writeln!(stdout, "{}", results.join(" "))?;
    }
    Ok(stdout.flush()?)
}

fn fetch_module(args: &FetchArgs) -> anyhow::Result<()> {
    let id: ModuleId = args.hash.parse()?;
    let addr = node_addr(&args.node, &args.conn)?;
    let bytes = match ask(addr, &Request::Fetch(id.0))? {
        Response::Module(bytes) => bytes,
        Response::Refused(reason) => bail!("{} ({addr}) refused the fetch: {reason}", args.node),
        _ => bail!("{addr} answered a fetch with something else: not a warren agent host"),
    };
    let got = ModuleId::of(&bytes);
    if got != id {
        bail!("{} ({addr}) sent a module whose hash is {got}, not the {id} asked for; nothing written", args.node);
    }
    // Written beside the target and renamed, so the file is the whole module or absent.
    let partial = args.out.with_extension("partial");
    std::fs::write(&partial, &bytes).with_context(|| format!("{}", partial.display()))?;
    std::fs::rename(&partial, &args.out).with_context(|| format!("{}", args.out.display()))?;
    println!("fetched {id} ({} bytes) into {}", bytes.len(), args.out.display());
    Ok(())
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for the key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("secret key {} (an existing key is never overwritten)", out.display()))?;
    writeln!(file, "{}", hex(&seed))?;
    file.sync_all()?;
    let public = hex(&key.verifying_key().to_bytes());
    let public_file = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&public_file, format!("{public}\n")).with_context(|| format!("{}", public_file.display()))?;
    println!("{public}");
    Ok(())
}

fn sign(module: &Path, key: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let id = ModuleId::of(&read_module(module)?);
    let signature = ModuleSignature::sign(&id, &secret_key(key)?);
    let out = out.map_or_else(|| PathBuf::from(format!("{}.sig", module.display())), Path::to_path_buf);
    std::fs::write(&out, format_signature(&signature)).with_context(|| format!("{}", out.display()))?;
    println!("{id}");
    Ok(())
}

/// NODE as an address, or the first TCP endpoint registered under that name.
pub fn node_addr(node: &str, conn: &Conn) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = node.parse() {
        return Ok(addr);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let name = warren_registry::Name::new(node.to_owned())
            .with_context(|| format!("{node:?} is neither ADDR:PORT nor a registry name"))?;
        let client = conn.connect().await?;
        let (_, entry) = conn.ask(client.lookup(&name)).await.with_context(|| format!("looking up {node}"))?;
        entry
            .endpoints
            .iter()
            .find(|e| e.transport == warren_registry::Transport::Tcp)
            .map(|e| SocketAddr::new(e.addr, e.port))
            .with_context(|| format!("{node} has no TCP endpoint in the registry"))
    })
}

/// Sends one request to the agent host at `addr` and reads its one answer.
fn ask(addr: SocketAddr, request: &Request) -> anyhow::Result<Response> {
    let what = match request {
        Request::Run(_) => format!("shipping the agent to {addr}, waiting for its result"),
        Request::Fetch(_) => format!("fetching the module from {addr}"),
        Request::Start(_) => format!("starting the agent on {addr}"),
        Request::Arrive(_) | Request::ArriveParts { .. } | Request::Part(_) => format!("sending the agent to {addr}"),
        Request::Wait(_) => format!("waiting for the agent on {addr}"),
        Request::Order(_) => format!("ordering the agent on {addr}"),
        Request::List => format!("listing the agents on {addr}"),
        Request::Reference { .. } => format!("calling through a reference on {addr}"),
    };
    let spinner = warren_bench::progress::spinner(&what);
    let answer = ask_quietly(addr, request);
    spinner.finish_and_clear();
    answer
}

/// [`ask`] without the spinner.
fn ask_quietly(addr: SocketAddr, request: &Request) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the agent host at {addr}"))?;
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    stream.write_all(&encode(request)).with_context(|| format!("sending to {addr}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match FRAMING.split(&buf) {
            Ok(Some((body, _))) => {
                return postcard::from_bytes(body).with_context(|| format!("{addr} answered something unreadable"));
            }
            Ok(None) => {}
            Err(e) => bail!("{addr} is not a warren agent host: {e}"),
        }
        let n = stream.read(&mut chunk).with_context(|| format!("no answer from {addr} within {ANSWER_WITHIN:?}"))?;
        if n == 0 {
            bail!("{addr} closed the connection without answering");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
