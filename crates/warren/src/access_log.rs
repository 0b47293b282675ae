//! HTTP's access log: the lines HTTP sessions write ([`warren_proto::Level::Access`], already in
//! nginx's `combined` format), appended to a file or standard output by a writer thread.
//!
//! A server thread never waits for the disk: it hands its line to a bounded queue of
//! [`QUEUE`] lines and goes on. A writer that falls that far behind loses lines rather than
//! slowing the server; they are counted ([`dropped`]), and the writer says how many in the log
//! when it catches up. The writer gathers what is queued and writes it with one `write` of
//! whole lines to the file opened for appending. A process forked from the server (`fork`'s
//! child per connection, `prefork`'s workers) has no writer thread: it writes each line at once
//! with one `write`, so that a child that exits after its connection loses nothing, and lines
//! of several processes never interleave within a line.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use anyhow::Context as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::logging::LogTo;

/// Lines waiting for the writer, at most.
pub const QUEUE: usize = 16 * 1024;
/// The writer writes at most this much at once.
const BATCH: usize = 64 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written, in this process.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Set in each child at `fork`: the parent's writer thread is not there.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Lines dropped because the writer was [`QUEUE`] lines behind, since the process started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Wait until this process's queued lines are written, for at most `bound`: a server that
/// stops writes the lines of its last requests before it exits.
pub fn flush(bound: std::time::Duration) {
    let deadline = std::time::Instant::now() + bound;
    while PENDING.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The `tracing` layer that takes access-log lines to the writer.
pub struct AccessLog {
    to: Destination,
    /// The writer thread's queue.
    writer: SyncSender<String>,
}

enum Destination {
    Stdout,
    File(File),
}

impl AccessLog {
    /// The access log to `to`, with its writer started; a file is opened (created, for
    /// appending) now, so that a path that cannot be written is an error at start.
    pub fn open(to: &LogTo) -> anyhow::Result<Self> {
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        extern "C" fn forked() {
            FORKED.store(true, Ordering::Relaxed);
        }
        AT_FORK.call_once(|| {
            // SAFETY: `forked` only stores to an atomic, which is async-signal-safe as a fork
            // handler requires.
            unsafe {
                nix::libc::pthread_atfork(None, None, Some(forked));
            }
        });
        let (to, out): (Destination, Box<dyn Write + Send>) = match to {
            LogTo::Stdout => (Destination::Stdout, Box::new(std::io::stdout()) as Box<dyn Write + Send>),
            LogTo::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("access log {}", path.display()))?;
                let out = file.try_clone().with_context(|| format!("access log {}", path.display()))?;
                (Destination::File(file), Box::new(out) as Box<dyn Write + Send>)
            }
        };
        let (lines, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write(&queue, out))
            .context("access log: cannot start its writer")?;
        drop(writer);
        Ok(Self { to, writer: lines })
    }

    /// Queue `line` for the writer; in a forked child, write it at once.
    fn send(&self, line: String) {
        if FORKED.load(Ordering::Relaxed) {
            let written = match &self.to {
                Destination::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
                Destination::File(file) => {
                    // `&File` writes too: one `write`, appended, however many processes share it.
                    let mut file: &File = file;
                    file.write_all(line.as_bytes())
                }
            };
            if written.is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        // Counted before it is queued, so that the writer never takes away more than was added.
        PENDING.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.writer.try_send(line) {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer: whatever is queued, in batches of whole lines, until the queue's sender goes.
fn write(queue: &Receiver<String>, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut reported = 0;
    let mut failing = false;
    while let Ok(line) = queue.recv() {
        batch.extend_from_slice(line.as_bytes());
        let mut lines = 1;
        while batch.len() < BATCH
            && let Ok(line) = queue.try_recv()
        {
            batch.extend_from_slice(line.as_bytes());
            lines += 1;
        }
        match out.write_all(&batch).and_then(|()| out.flush()) {
            Ok(()) => failing = false,
            // Said once per failing stretch, not once per batch.
            Err(e) if !failing => {
                failing = true;
                tracing::error!(target: "warren", "access log: {e}");
            }
            Err(_) => {}
        }
        batch.clear();
        PENDING.fetch_sub(lines, Ordering::Relaxed);
        let dropped = dropped();
        if dropped > reported {
            tracing::warn!(target: "warren", dropped = dropped - reported, "access log: lines dropped, the writer fell behind");
            reported = dropped;
        }
    }
}

impl<S: Subscriber> Layer<S> for AccessLog {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        line.0.push('\n');
        self.send(line.0);
    }
}

/// An event's message, as it was written.
struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }
}
