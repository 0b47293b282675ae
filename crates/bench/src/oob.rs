//! `warren bench oob`: how fast a huge upload is cancelled out of band, both ways, under load.
//!
//! For each model, a `warren files serve` child serves two roots: one unlimited (the
//! **streaming** case: the client sends as fast as loopback goes) and one with an upload rate
//! (the **stalled** case: the server takes the bytes slower than they come, so its receive
//! window is full and the client's unsent bytes pile up). Each run declares an upload of
//! `--size` bytes, streams, then cancels:
//!
//! - **control**: `Cancel` on the control endpoint; the latency is until its answer, which the
//!   server sends once the upload is stopped and its partial file removed.
//! - **urgent**: one urgent byte on the data connection; the latency is until the `Cancelled`
//!   frame, which the session sends once it stopped the upload and removed the partial file.
//!
//! Either way the bench then checks that no partial file is left and that the data connection
//! ends with `Cancelled` and a clean end of file (no reset), and times that end too: the server
//! has then dropped everything in flight (up to the mark, for urgent data). Runs are
//! interleaved across scenarios and mechanisms.
//!
//! The client limits its unsent bytes as `warren files put` does (`--unsent`) and the servers
//! bound their receive buffers (`--recv-buffer`); `--unsent 0 --recv-buffer 0` is how the bench
//! ran before both, when a full send buffer held the urgent byte itself back for ~83 ms
//! (`warren_fileserver::net`).

use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use warren_fileserver::wire::{Outcome, Reply, Request};
use warren_models::Model;

use crate::chart::BarChart;

/// Options of `warren bench oob`.
#[derive(Debug, Args)]
pub struct OobArgs {
    /// Models, comma-separated [default: thread,pool,event].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Runs per model, scenario and mechanism (p99 needs at least 20).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// The declared upload size: the client would go on sending this much [default: 64 GiB].
    #[arg(long, default_value_t = 64 << 30)]
    pub size: u64,
    /// How long the streaming client sends before it cancels.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30ms")]
    pub stream_for: Duration,
    /// The stalled server's upload rate, bytes per second.
    #[arg(long, default_value_t = 32 << 20)]
    pub stalled_rate: u64,
    /// The servers' `--recv-buffer` (SO_RCVBUF of data connections; 0: kernel autotuning).
    #[arg(long, default_value_t = warren_fileserver::net::DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
    /// The client's unsent limit while uploading (TCP_NOTSENT_LOWAT, as `warren files put`
    /// sets it; 0: none, the socket queues up to its send buffer).
    #[arg(long, default_value_t = warren_fileserver::net::UPLOAD_UNSENT)]
    pub unsent: u32,
    /// Directory for oob.md and oob.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Control,
    Urgent,
}

/// One file server child.
struct Child_ {
    child: Child,
    /// Kept open: the server prints its report at exit.
    _stdout: io::BufReader<std::process::ChildStdout>,
    data: SocketAddr,
    control: SocketAddr,
    root: PathBuf,
}

impl Drop for Child_ {
    fn drop(&mut self) {
        crate::server::terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn start(exe: &Path, model: Model, rate: u64, recv_buffer: usize, tag: &str) -> anyhow::Result<Child_> {
    let root = std::env::temp_dir().join(format!("warren-bench-oob-{}-{model}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut child = Command::new(exe)
        .args(["files", "serve", "--root"])
        .arg(&root)
        .args(["--model", model.name(), "-d", "0", "--upload-rate", &rate.to_string()])
        .args(["--recv-buffer", &recv_buffer.to_string()])
        // Uploads of `--size` by one anonymous client, one at a time.
        .args(["--anonymous", "write", "--max-upload", &u64::MAX.to_string(), "--max-in-flight", &u64::MAX.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start warren files serve")?;
    let mut line = String::new();
    let mut stdout = io::BufReader::new(child.stdout.take().expect("piped"));
    stdout.read_line(&mut line)?;
    // "warren: serving files (tcp, control ADDR) under MODEL on ADDR"
    let control = line.split("control ").nth(1).and_then(|r| r.split(')').next()).and_then(|a| a.parse().ok());
    let data = line.trim().rsplit(" on ").next().and_then(|a| a.parse().ok());
    match (data, control) {
        (Some(data), Some(control)) => Ok(Child_ { child, _stdout: stdout, data, control, root }),
        _ => bail!("unexpected readiness line {line:?}"),
    }
}

/// Bytes queued in the socket and not yet sent (`SIOCOUTQNSD`): they pile up once the peer's
/// window is closed.
fn unsent(stream: &TcpStream) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, which points to ours.
    let rc = unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::SIOCOUTQNSD, &mut n) };
    if rc < 0 { 0 } else { n as usize }
}

fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Reply> {
    loop {
        if let Some((reply, used)) = Reply::decode(buf)? {
            buf.drain(..used);
            return Ok(reply);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk)? {
            0 => bail!("connection closed before a reply"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn partials(root: &Path) -> usize {
    std::fs::read_dir(root.join(".warren/tmp"))
        .map_or(0, |d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "part")).count())
}

/// What one cancelled upload measured: latency to the server's "stopped, partial gone", to
/// the `Cancelled` frame on the data connection and to its clean end (the server dropped what
/// was in flight, up to the mark for urgent data); bytes sent before the cancel.
struct Run {
    stopped: Duration,
    status: Duration,
    closed: Duration,
    sent: u64,
}

/// Unsent bytes that say the server's window is closed: the client's limit when it has one
/// (a writer cannot queue more than about that), else 128 KiB.
fn stall_mark(args: &OobArgs) -> usize {
    if args.unsent == 0 { 128 * 1024 } else { (args.unsent as usize).min(128 * 1024) }
}

fn one(server: &Child_, stalled: bool, mechanism: Mechanism, args: &OobArgs) -> anyhow::Result<Run> {
    let mut data = TcpStream::connect(server.data)?;
    data.set_nodelay(true)?;
    data.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut control = TcpStream::connect(server.control)?;
    control.set_nodelay(true)?;
    control.set_read_timeout(Some(Duration::from_secs(10)))?;
    if stalled {
        // A fixed send buffer, as before the unsent limit: without that limit the loop below
        // fills it, and the urgent byte then waits for a third of it to drain.
        socket2::SockRef::from(&data).set_send_buffer_size(4 << 20)?;
    }
    if args.unsent > 0 {
        // As `warren files put` does: the urgent byte then follows close behind what is sent.
        warren_fileserver::net::limit_unsent(&data, args.unsent)?;
    }
    let mut head = Vec::new();
    Request::Put { size: args.size, path: format!("bench/{:016x}.bin", fastrand::u64(..)) }.encode(&mut head);
    data.write_all(&head)?;
    let mut buf = Vec::new();
    // The server names the upload (the id a cancel presents) before the body goes.
    let id = match read_reply(&mut data, &mut buf)? {
        Reply::Ready { id } => id,
        other => bail!("the upload was refused: {other:?}"),
    };
    data.set_nonblocking(true)?;
    let chunk = vec![0x5a; 64 * 1024];
    let begun = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = begun.elapsed();
        if stalled && unsent(&data) >= stall_mark(args) && elapsed >= args.stream_for {
            break;
        }
        if !stalled && elapsed >= args.stream_for {
            break;
        }
        ensure!(elapsed < Duration::from_secs(10), "the upload never stalled");
        match data.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&data), nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1u8));
            }
            Err(e) => return Err(e.into()),
        }
    }
    data.set_nonblocking(false)?;
    let t0 = Instant::now();
    let stopped = match mechanism {
        Mechanism::Control => {
            let mut frame = Vec::new();
            Request::Cancel { id }.encode(&mut frame);
            control.write_all(&frame)?;
            match read_reply(&mut control, &mut Vec::new())? {
                Reply::CancelResult { outcome: Outcome::Stopped, .. } => t0.elapsed(),
                other => bail!("control endpoint answered {other:?}"),
            }
        }
        Mechanism::Urgent => {
            // Lifts the unsent limit first, which would otherwise hold the byte back.
            warren_fileserver::net::send_urgent(&data)?;
            Duration::ZERO
        }
    };
    let status = match read_reply(&mut data, &mut buf)? {
        Reply::Cancelled { .. } => t0.elapsed(),
        other => bail!("the data connection answered {other:?}"),
    };
    let stopped = if mechanism == Mechanism::Urgent { status } else { stopped };
    ensure!(partials(&server.root) == 0, "a partial file is left after the cancel");
    // The client stops; the server drops what is still in flight and closes without a reset.
    data.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).context("the data connection did not end cleanly")?;
    Ok(Run { stopped, status, closed: t0.elapsed(), sent })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).saturating_sub(1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `warren bench oob`.
pub fn oob(args: &OobArgs) -> anyhow::Result<()> {
    ensure!((1..=1000).contains(&args.runs), "--runs must be 1 to 1000");
    ensure!(args.stalled_rate > 0, "--stalled-rate must be above 0");
    let models =
        if args.models.is_empty() { vec![Model::Thread, Model::Pool, Model::Event] } else { args.models.clone() };
    let exe = crate::warren_exe()?;
    let recv_buffer =
        if args.recv_buffer == 0 { "autotuned".to_owned() } else { format!("{} KiB", args.recv_buffer >> 10) };
    let unsent = if args.unsent == 0 { "no limit".to_owned() } else { format!("{} KiB", args.unsent >> 10) };
    let mut md = String::from("# warren bench oob\n\n");
    writeln!(
        md,
        "Cancel latency, {} runs each: upload declared {} GiB; streaming cancels after {:?}; stalled: server \
         limited to {} MiB/s, client stops with ≥{} KiB unsent (window closed). Server receive buffer: \
         {recv_buffer}; client unsent limit: {unsent}.\n",
        args.runs,
        args.size >> 30,
        args.stream_for,
        args.stalled_rate >> 20,
        stall_mark(args) >> 10,
    )?;
    writeln!(
        md,
        "| model | mechanism | upload | p50 | p99 | max | status on data conn. p50 | connection ended p50 | sent \
         before cancel (median) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    let cases = [
        (false, Mechanism::Control),
        (false, Mechanism::Urgent),
        (true, Mechanism::Control),
        (true, Mechanism::Urgent),
    ];
    let case_name = |(is_stalled, mechanism): (bool, Mechanism)| {
        format!(
            "{}, {}",
            if mechanism == Mechanism::Control { "control endpoint" } else { "TCP urgent" },
            if is_stalled { "stalled" } else { "streaming" }
        )
    };
    let mut chart = BarChart {
        title: "Cancelling an upload out of band: p50 until the server confirms".into(),
        unit: "ms".into(),
        series: cases.iter().map(|&c| case_name(c)).collect(),
        note: format!("{} runs per model and case; stalled: the server's receive window is full", args.runs),
        ..BarChart::default()
    };
    let started = Instant::now();
    for model in models {
        let streaming = start(&exe, model, 0, args.recv_buffer, "streaming")?;
        let stalled = start(&exe, model, args.stalled_rate, args.recv_buffer, "stalled")?;
        let mut results: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
        for run_index in 0..args.runs {
            crate::progress::bench_line(&format!(
                "bench: [{:>5.1}s] {model}: run {}/{}",
                started.elapsed().as_secs_f64(),
                run_index + 1,
                args.runs
            ));
            for (i, &(is_stalled, mechanism)) in cases.iter().enumerate() {
                let server = if is_stalled { &stalled } else { &streaming };
                let run = one(server, is_stalled, mechanism, args).with_context(|| {
                    format!("{model}, {mechanism:?}, {}", if is_stalled { "stalled" } else { "streaming" })
                })?;
                results[i].push(run);
            }
        }
        let mut p50s = Vec::new();
        for ((is_stalled, mechanism), runs) in cases.iter().zip(results) {
            let mut stopped: Vec<Duration> = runs.iter().map(|r| r.stopped).collect();
            let mut status: Vec<Duration> = runs.iter().map(|r| r.status).collect();
            let mut closed: Vec<Duration> = runs.iter().map(|r| r.closed).collect();
            let mut sent: Vec<u64> = runs.iter().map(|r| r.sent).collect();
            stopped.sort();
            status.sort();
            closed.sort();
            sent.sort();
            p50s.push(Some(percentile(&stopped, 50).as_secs_f64() * 1e3));
            writeln!(
                md,
                "| {model} | {} | {} | {} | {} | {} | {} | {} | {:.1} MiB |",
                if *mechanism == Mechanism::Control { "control endpoint" } else { "TCP urgent (SIGURG)" },
                if *is_stalled { "stalled (window full)" } else { "streaming" },
                ms(percentile(&stopped, 50)),
                ms(percentile(&stopped, 99)),
                ms(*stopped.last().expect("runs")),
                ms(percentile(&status, 50)),
                ms(percentile(&closed, 50)),
                sent[sent.len() / 2] as f64 / f64::from(1 << 20),
            )?;
        }
        chart.groups.push((model.to_string(), p50s));
    }
    crate::results::write(&args.out, "oob", &md, &chart)?;
    Ok(())
}
