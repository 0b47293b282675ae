//! Uploads in progress, by id, and the control endpoint that cancels them.
//!
//! The control endpoint is the chapter's first way to send out-of-band data: a separate
//! connection, served by a thread of its own ([`ControlService`] under the `event` model)
//! rather than by the data workers, so a cancel takes effect when every data worker is busy (or
//! the upload's connection waits in the pool's queue and nobody reads it). The control thread does the cancelling itself: it marks the upload
//! cancelled and removes the partial file's name, then answers. It does not take the upload's
//! lock for that, which the session holds while it writes: a session thread preempted in the
//! middle of a write (2 cores, a busy client, other work) would otherwise hold the cancel up for
//! a scheduler slice or more. The data session learns it at its next turn (its next write is
//! refused), answers `Cancelled` on the data connection, drops the rest of the body and closes
//! its descriptor of the (by then nameless) file.
//!
//! The decision is atomic, one compare-and-swap on the upload's state: an upload is either
//! committed or cancelled, and the control client is told which (`Completed` or `Stopped`); a
//! cancel that meets a commit in progress waits for it under the lock.
//!
//! **Ids are the server's**: 64 random bits drawn when the upload begins and told to its client
//! (`Ready`). The id is the capability a cancel presents, so a client cannot pick one, and a
//! cancel for an id that is not running answers `Unknown` and leaves nothing behind (no table
//! of early cancels that a flood could fill or flush, and no answer that tells which ids run).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use warren_proto::{ConnInfo, Deadline, Level, Limits, NoHub, Nothing, Output, Service, Session};

use crate::store::{Discarder, Sink, StoreError};
use crate::wire::{ErrorCode, Meta, Outcome, Reply, Request};

/// How many finished upload ids are remembered (to answer late cancels).
const REMEMBER: usize = 4096;

/// Every upload in progress on one server.
#[derive(Debug, Default)]
pub struct Uploads {
    state: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    running: HashMap<u64, Arc<Slot>>,
    /// Ids that ended, oldest first.
    ended: HashMap<u64, Ended>,
    order: VecDeque<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Cancelled,
    Completed,
}

/// [`Slot::state`]: still receiving.
const RUNNING: u8 = 0;
/// [`Slot::state`]: cancelled (by a control thread or the session); no commit will happen.
const CANCELLED: u8 = 1;
/// [`Slot::state`]: the session is committing; a cancel is too late unless the commit fails.
const COMMITTING: u8 = 2;

/// One upload's writer, shared by its session and a control thread.
struct Slot {
    /// `RUNNING`, then `CANCELLED` or `COMMITTING`: whichever swap wins decides the outcome.
    /// The session checks it before every write, so it lets go at its next one.
    state: AtomicU8,
    /// Removes the partial file's name without the lock (the sink's, when it has one).
    discard: Option<Discarder>,
    inner: Mutex<SlotInner>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

struct SlotInner {
    /// `None` once committed or cancelled.
    sink: Option<Box<dyn Sink>>,
    ended: Option<Ended>,
}

/// Why an upload could not begin or go on.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload cancelled")]
    Cancelled,
    /// A fresh id was drawn by another upload meanwhile (one chance in 2^64).
    #[error("upload id drawn twice")]
    IdTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uploads {
    /// A random id that no upload running or remembered has (never 0).
    pub fn fresh_id(&self) -> Result<u64, UploadError> {
        let reg = lock(&self.state);
        loop {
            let id = u64::from_le_bytes(crate::auth::random().map_err(StoreError::from)?);
            if id != 0 && !reg.running.contains_key(&id) && !reg.ended.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Register upload `id` (from [`Uploads::fresh_id`]) writing to `sink`.
    pub fn begin(self: &Arc<Self>, id: u64, sink: Box<dyn Sink>) -> Result<Upload, UploadError> {
        let mut reg = lock(&self.state);
        if reg.running.contains_key(&id) || reg.ended.contains_key(&id) {
            return Err(UploadError::IdTaken);
        }
        let discard = sink.discarder();
        let inner = Mutex::new(SlotInner { sink: Some(sink), ended: None });
        let slot = Arc::new(Slot { state: AtomicU8::new(RUNNING), discard, inner });
        reg.running.insert(id, slot.clone());
        Ok(Upload { uploads: self.clone(), id, slot })
    }

    /// Cancel upload `id` (the control endpoint's request).
    pub fn cancel(&self, id: u64) -> Outcome {
        let slot = {
            let reg = lock(&self.state);
            match reg.running.get(&id) {
                Some(slot) => slot.clone(),
                None => {
                    return match reg.ended.get(&id) {
                        Some(Ended::Completed) => Outcome::Completed,
                        Some(Ended::Cancelled) => Outcome::Stopped,
                        None => Outcome::Unknown,
                    };
                }
            }
        };
        match slot.state.compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                if let Some(discard) = &slot.discard {
                    // The name goes now, whatever the session is doing; it closes the file.
                    discard();
                    return Outcome::Stopped;
                }
                let mut inner = lock(&slot.inner);
                inner.ended.get_or_insert(Ended::Cancelled);
                if let Some(sink) = inner.sink.take() {
                    sink.abort();
                }
                Outcome::Stopped
            }
            Err(CANCELLED) => Outcome::Stopped,
            // A commit in progress holds the lock until it has put the file in place (or failed).
            Err(_) => match lock(&slot.inner).ended {
                Some(Ended::Completed) => Outcome::Completed,
                _ => Outcome::Stopped,
            },
        }
    }
}

impl Registry {
    fn remember(&mut self, id: u64, ended: Ended) {
        self.running.remove(&id);
        if self.ended.insert(id, ended).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBER {
            if let Some(old) = self.order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }
}

/// A session's handle on its running upload. Dropped unfinished (the connection died), it
/// removes the partial file.
#[derive(Debug)]
pub struct Upload {
    uploads: Arc<Uploads>,
    id: u64,
    slot: Arc<Slot>,
}

impl Upload {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Write the next bytes; `Cancelled` once a control thread (or [`Upload::cancel`]) stopped it.
    pub fn write(&self, data: &[u8]) -> Result<(), UploadError> {
        if self.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        let mut inner = lock(&self.slot.inner);
        match inner.sink.as_mut() {
            Some(sink) => Ok(sink.write(data)?),
            None => Err(UploadError::Cancelled),
        }
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.slot.state.load(Ordering::SeqCst) == CANCELLED
    }

    /// What tells whether it was cancelled while a job has the upload.
    pub fn cancel_flag(&self) -> CancelFlag {
        CancelFlag(self.slot.clone())
    }

    /// Make the bytes durable.
    pub fn sync(&self) -> Result<(), UploadError> {
        match lock(&self.slot.inner).sink.as_mut() {
            Some(sink) => Ok(sink.sync()?),
            None => Err(UploadError::Cancelled),
        }
    }

    /// Put the file in place, unless it was cancelled first.
    pub fn commit(self) -> Result<Meta, UploadError> {
        let mut inner = lock(&self.slot.inner);
        if self.slot.state.compare_exchange(RUNNING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(UploadError::Cancelled);
        }
        let sink = inner.sink.take().ok_or(UploadError::Cancelled)?;
        let result = sink.commit();
        let ended = if result.is_ok() { Ended::Completed } else { Ended::Cancelled };
        inner.ended = Some(ended);
        drop(inner);
        lock(&self.uploads.state).remember(self.id, ended);
        Ok(result?)
    }

    /// Stop it here (urgent data, an error, a shutdown): the partial file goes.
    pub fn cancel(&self) {
        // Fails once committing or committed: then `ended` below is already set.
        let _ = self.slot.state.compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
        let mut inner = lock(&self.slot.inner);
        if inner.ended.is_none() {
            inner.ended = Some(Ended::Cancelled);
        }
        if let Some(sink) = inner.sink.take() {
            sink.abort();
        }
    }
}

/// Whether an upload was cancelled, readable while the upload itself is away (in a write job).
#[derive(Debug, Clone)]
pub struct CancelFlag(Arc<Slot>);

impl CancelFlag {
    pub fn is_cancelled(&self) -> bool {
        self.0.state.load(Ordering::SeqCst) == CANCELLED
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.cancel();
        let ended = lock(&self.slot.inner).ended.unwrap_or(Ended::Cancelled);
        lock(&self.uploads.state).remember(self.id, ended);
    }
}

/// The control endpoint's protocol: `Cancel` frames in, `CancelResult` frames out, served
/// like every other protocol (the binary runs it under the `event` model on a thread of its
/// own, at a raised priority). A cancel never waits for the upload's session: see the module
/// docs.
#[derive(Debug)]
pub struct ControlService {
    pub uploads: Arc<Uploads>,
}

impl Service for ControlService {
    type Hub = NoHub;
    type Session = ControlSession;

    fn name(&self) -> &'static str {
        "files-control"
    }

    fn refusal(&self) -> &'static [u8] {
        &CONTROL_REFUSAL
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> ControlSession {
        let limits = Limits { idle_timeout: CONTROL_IDLE, read_timeout: CONTROL_IDLE, max_request: 0 };
        ControlSession {
            uploads: self.uploads.clone(),
            id: info.id.0,
            buf: Vec::new(),
            deadline: Deadline::new(&limits, now),
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// The answer to a control connection over the endpoint's cap, before it is closed.
static CONTROL_REFUSAL: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut bytes = Vec::new();
    Reply::Error { code: ErrorCode::Busy, message: "too many control connections".into() }.encode(&mut bytes);
    bytes
});

/// A control connection idle this long is closed.
const CONTROL_IDLE: Duration = Duration::from_secs(60);

/// One control connection.
#[derive(Debug)]
pub struct ControlSession {
    uploads: Arc<Uploads>,
    id: u64,
    buf: Vec<u8>,
    deadline: Deadline,
}

type ControlOut = Output<Nothing>;

impl ControlSession {
    fn refuse(&mut self, message: String, out: &mut ControlOut) {
        let mut bytes = Vec::new();
        Reply::Error { code: ErrorCode::Protocol, message: message.clone() }.encode(&mut bytes);
        out.send(&bytes);
        out.log(Level::Debug, format!("control {:x}: closing: {message}", self.id));
        self.buf = Vec::new();
        out.close();
    }
}

impl Session for ControlSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut ControlOut) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut ControlOut) {
        self.buf.extend_from_slice(data);
        loop {
            match Request::decode(&self.buf) {
                Ok(Some((Request::Cancel { id }, used))) => {
                    self.buf.drain(..used);
                    let outcome = self.uploads.cancel(id);
                    out.log(Level::Info, format!("control: cancel of upload {id:016x}: {outcome:?}"));
                    let mut bytes = Vec::new();
                    Reply::CancelResult { id, outcome }.encode(&mut bytes);
                    out.send(&bytes);
                }
                Ok(Some(_)) => return self.refuse("only Cancel is served on the control endpoint".into(), out),
                Ok(None) => break,
                Err(e) => return self.refuse(e.to_string(), out),
            }
        }
        self.deadline.input(now, !self.buf.is_empty());
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut ControlOut) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut ControlOut) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut ControlOut) {
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("control {:x}: closing: {why}", self.id));
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}

/// Raise the calling thread's priority where the system allows it (`setpriority`, needs
/// CAP_SYS_NICE), so that a CPU busy with data does not delay a cancel.
pub fn raise_priority() {
    // SAFETY: setpriority with this thread's id only changes this thread's nice value.
    unsafe {
        let _ = nix::libc::setpriority(nix::libc::PRIO_PROCESS, nix::libc::gettid() as u32, -10);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    use super::*;
    use crate::store::Discarder;

    /// A sink whose writes block until told to go on, and which counts how often its name was
    /// discarded from outside.
    struct Stuck {
        entered: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
        discarded: Arc<AtomicUsize>,
    }

    impl Sink for Stuck {
        fn write(&mut self, _: &[u8]) -> Result<(), StoreError> {
            self.entered.send(()).unwrap();
            self.go.recv().unwrap();
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn commit(self: Box<Self>) -> Result<Meta, StoreError> {
            Ok(Meta { is_dir: false, size: 0, version: 1, modified_ms: 0 })
        }
        fn abort(self: Box<Self>) {}
        fn discarder(&self) -> Option<Discarder> {
            let discarded = self.discarded.clone();
            Some(Arc::new(move || {
                discarded.fetch_add(1, Ordering::SeqCst);
            }))
        }
    }

    /// A cancel is answered, and the partial file's name removed, while the session is stuck in
    /// a write holding the upload's lock; the session's next write is refused.
    #[test]
    fn cancel_does_not_wait_for_a_write_in_progress() {
        let uploads = Arc::new(Uploads::default());
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let discarded = Arc::new(AtomicUsize::new(0));
        let sink = Stuck { entered: entered_tx, go: go_rx, discarded: discarded.clone() };
        let upload = uploads.begin(7, Box::new(sink)).unwrap();
        let writer = std::thread::spawn(move || {
            let first = upload.write(b"abc").map_err(|e| e.to_string());
            let second = upload.write(b"def").map_err(|e| e.to_string());
            (first, second, upload)
        });
        entered.recv().unwrap();
        assert_eq!(uploads.cancel(7), Outcome::Stopped);
        assert_eq!(discarded.load(Ordering::SeqCst), 1, "the name goes before the answer");
        assert_eq!(uploads.cancel(7), Outcome::Stopped, "a second cancel says the same");
        go.send(()).unwrap();
        let (first, second, upload) = writer.join().unwrap();
        assert!(first.is_ok(), "the write in progress finishes (into a nameless file)");
        assert!(second.is_err(), "the next one is refused");
        assert!(upload.is_cancelled());
        assert!(matches!(upload.commit(), Err(UploadError::Cancelled)));
        assert_eq!(uploads.cancel(7), Outcome::Stopped);
    }

    /// Once committed, a cancel is too late; a commit after a cancel is refused.
    #[test]
    fn commit_and_cancel_exclude_each_other() {
        let uploads = Arc::new(Uploads::default());
        let sink = |discarded: &Arc<AtomicUsize>| {
            let (entered, _) = mpsc::channel();
            let (_, go) = mpsc::channel();
            Box::new(Stuck { entered, go, discarded: discarded.clone() })
        };
        let discarded = Arc::new(AtomicUsize::new(0));
        let upload = uploads.begin(1, sink(&discarded)).unwrap();
        upload.commit().unwrap();
        assert_eq!(uploads.cancel(1), Outcome::Completed);
        assert_eq!(discarded.load(Ordering::SeqCst), 0);
        let upload = uploads.begin(2, sink(&discarded)).unwrap();
        assert_eq!(uploads.cancel(2), Outcome::Stopped);
        assert!(matches!(upload.commit(), Err(UploadError::Cancelled)));
        assert_eq!(uploads.cancel(2), Outcome::Stopped);
    }
}
