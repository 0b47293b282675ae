//! The file service's connection: frames in, replies and file bodies out, uploads to the store,
//! leases and callbacks through the hub, and both ways to cancel an upload.
//!
//! - **Frames** are answered in order. A request that needs the hub (`Hello`, `Get` with a
//!   client, the two steps of a commit) or the disk (every store call) waits for its answer;
//!   frames behind it wait in the buffer, and past [`WAIT_BUFFER`] the session stops taking
//!   input ([`Session::wants_input`]) until it is answered.
//! - **The disk is reached only through jobs** (`Output::job`): a stat, a listing, an open, the
//!   upload's writes, its `fsync`, and the commit's rename run where the server model runs
//!   blocking work (helper threads under `event`, `green` and `hybrid`; the connection's own
//!   thread elsewhere), so a slow disk holds only the connections that wait for it.
//! - **An upload** (`Put` then `size` raw bytes) is written as it arrives: one write in flight,
//!   the bytes arriving meanwhile gathered for the next (up to [`PENDING`]; then input waits).
//!   Once the whole body is written it is synced, the intent journaled, renamed into place and
//!   the change journaled (callbacks go out), and only then `Done`. With
//!   [`FileLimits::upload_rate`] the session holds its input back beyond the rate: the peer's
//!   window fills, as with a slow disk.
//! - **Cancelled through the control endpoint**, the upload's next write fails, or the session
//!   notices at its next check (every [`CANCEL_POLL`] while the upload runs, also while a write
//!   is in flight): it answers `Cancelled` and drops the rest of the declared body (the client
//!   may also stop and half-close: the connection then closes).
//! - **Cancelled with TCP urgent data**: on [`Urgent::Pointer`] the upload stops and its
//!   partial file goes at once (without waiting for a write in flight), `Cancelled` is sent,
//!   and input is dropped until [`Urgent::Mark`]; after the mark, frames resume (the urgent
//!   byte ends the body).
//! - A refused upload (no right, bad path, too large, over quota) is answered and the
//!   connection closed: reading a body only to drop it is not worth the bandwidth.
//! - **Rights**: a connection reads with the anonymous right until it presents a credential
//!   (`Auth`, see [`crate::auth`]); `Put` and `Delete` need the write right. `Hello` must prove
//!   the client identity it names with that identity's key.
//! - **Bounded output**: a request is answered only while less than [`OUTPUT_LIMIT`] bytes wait
//!   for the peer; beyond it the frames behind wait for the queue to drain (and past
//!   [`WAIT_BUFFER`] the peer's window fills), so a peer that asks without reading costs a
//!   bounded amount. A peer [`CALLBACK_BACKLOG`] bytes behind when a callback is pushed is
//!   disconnected; its leases still end on time.
//! - **Upload bodies** must keep coming: a body idle for [`FileLimits::read_timeout`] between
//!   bytes is given up, and its partial file removed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use warren_proto::{ConnInfo, Deadline, Job, Level, Limits, Output, Service, Session, Token, Urgent};

use crate::auth::{Access, Principal};
use crate::cancel::{CancelFlag, Upload, UploadError, Uploads};
use crate::journal::MemJournal;
use crate::leases::{FileMessage, FileRequest, LeaseHub};
use crate::path::FilePath;
use crate::quota::{Quotas, Reservation};
use crate::store::{Body, BodyData, Store, StoreError};
use crate::wire::{ClientKey, Entry, ErrorCode, LIST_PAGE, MAX_FRAME, Meta, Reply, Request, Right};

type Out = Output<FileRequest, FileDone>;

/// Limits and knobs of the file service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// Close a connection idle this long. Default 5 minutes.
    pub idle_timeout: Duration,
    /// Close a connection that started a frame and has not finished it within this long, or
    /// whose upload body has had no byte for this long. Default 30 s.
    pub read_timeout: Duration,
    /// The largest upload. Default 4 GiB.
    pub max_upload: u64,
    /// The upload bytes one client (a credential, or an anonymous peer address) may have in
    /// flight at once, counted as declared. Default 8 GiB.
    pub max_in_flight: u64,
    /// Bytes per second one upload may take in; 0 for no limit (the default).
    pub upload_rate: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(30),
            max_upload: 4 << 30,
            max_in_flight: 8 << 30,
            upload_rate: 0,
        }
    }
}

/// The file service: one [`FileSession`] per connection, one [`LeaseHub`] per server.
pub struct FileService {
    pub store: Arc<dyn Store>,
    pub uploads: Arc<Uploads>,
    pub limits: FileLimits,
    pub access: Arc<Access>,
    quotas: Arc<Quotas>,
    /// The hub, made (and recovered from its journal) before serving; taken by `new_hub`.
    hub: Mutex<Option<LeaseHub>>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").field("limits", &self.limits).finish()
    }
}

impl FileService {
    pub fn new(store: Arc<dyn Store>, hub: LeaseHub, limits: FileLimits, access: Access) -> Self {
        let access = Arc::new(access);
        Self { store, uploads: Arc::default(), limits, access, quotas: Arc::default(), hub: Mutex::new(Some(hub)) }
    }
}

/// The answer to a connection over `--max-conns`, before it is closed.
static REFUSAL: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut bytes = Vec::new();
    Reply::Error { code: ErrorCode::Busy, message: "the server is at its connection limit".into() }.encode(&mut bytes);
    bytes
});

impl Service for FileService {
    type Hub = LeaseHub;
    type Session = FileSession;

    fn name(&self) -> &'static str {
        "files"
    }

    fn refusal(&self) -> &'static [u8] {
        &REFUSAL
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> FileSession {
        let limits =
            Limits { idle_timeout: self.limits.idle_timeout, read_timeout: self.limits.read_timeout, max_request: 0 };
        FileSession {
            store: self.store.clone(),
            uploads: self.uploads.clone(),
            limits: self.limits.clone(),
            access: self.access.clone(),
            quotas: self.quotas.clone(),
            right: self.access.anonymous,
            principal: info.peer.map_or(Principal::Unknown, |peer| Principal::Peer(peer.ip())),
            deadline: Deadline::new(&limits, now),
            id: info.id.0,
            buf: Vec::new(),
            output_full: false,
            client: None,
            state: State::Frames,
            job: NO_JOB,
            jobs: 0,
            until_mark: false,
            paused_until: None,
            cancel_check: None,
            read_closed: false,
            done: false,
        }
    }

    /// The hub made with the service. Called once per server; a second server from the same
    /// service gets a hub without a journal (leases in memory only).
    fn new_hub(&self, now: Instant) -> LeaseHub {
        let taken = self.hub.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken.unwrap_or_else(|| {
            let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
            LeaseHub::new(Box::new(MemJournal::default()), Vec::new(), Duration::from_secs(30), (now, wall as u64))
        })
    }
}

/// What a session's jobs bring back: the result of one store call. An [`Upload`] travels with
/// the jobs that use it and comes back with their result.
#[derive(Debug)]
pub enum FileDone {
    Stat(Result<Meta, StoreError>),
    /// A page of entries, and whether more follow.
    List(Result<(Vec<Entry>, bool), StoreError>),
    Open(Result<Body, StoreError>),
    /// The partial file made and the upload registered under a fresh id.
    Began(Result<Upload, UploadError>),
    /// The buffer comes back to be filled again.
    Wrote(Upload, Vec<u8>, Result<(), UploadError>),
    Synced(Upload, Result<(), UploadError>),
    Committed(Result<Meta, UploadError>),
    Deleted(Result<(), StoreError>),
    /// A stopped upload was let go (see [`FileSession::discard`]).
    Discarded,
}

/// What a session is doing.
#[derive(Debug)]
enum State {
    Frames,
    /// Waiting for the hub's answer or a job's result.
    Wait(Waiting),
    /// Receiving an upload's body.
    Body(Box<Receiving>),
    /// The upload was cancelled through the control endpoint: dropping `left` more body bytes.
    Skip {
        left: u64,
    },
}

#[derive(Debug)]
struct Receiving {
    /// `None` while a write job has it.
    upload: Option<Upload>,
    /// Whether the upload was cancelled, readable while a job has it.
    cancelled: CancelFlag,
    id: u64,
    path: FilePath,
    /// Body bytes still to come from the peer.
    left: u64,
    /// Body bytes taken from the peer (written, being written, or pending).
    taken: u64,
    /// Body bytes the store has.
    written: u64,
    /// Body bytes that arrived while a write was in flight: the next write.
    pending: Vec<u8>,
    started: Instant,
    /// The declared size, counted against the client's quota until the upload ends.
    _quota: Reservation,
}

/// What a request waits for. The hub's answers come as messages, the disk's as completions.
#[derive(Debug)]
enum Waiting {
    /// The hub: `Welcome` for this identity.
    Hello { client: u64, key: ClientKey },
    /// The hub: the lease on `path`; then the open.
    Lease { path: FilePath, have: u64 },
    /// A job: the stat.
    Stat,
    /// A job: the listing.
    List,
    /// A job: the file opened, with the lease granted before it.
    Open { have: u64, lease_ms: u32 },
    /// A job: the partial file made and the upload registered. `urgent`: urgent data came
    /// meanwhile, so the upload ends as soon as it begins.
    Begin { path: FilePath, size: u64, started: Instant, urgent: bool, quota: Reservation },
    /// A job: the whole body written is being synced.
    Sync(Box<Receiving>),
    /// The hub: the intent is being journaled; then the rename.
    Intent(Box<Receiving>),
    /// A job: the rename into place.
    Commit { id: u64, written: u64, path: FilePath, _quota: Reservation },
    /// The hub: the intent to delete is being journaled.
    DeleteIntent(FilePath),
    /// A job: the unlink.
    Delete(FilePath),
    /// The hub: the change is being journaled (callbacks going out); then this reply.
    Changed(Reply),
}

/// One file-service connection.
#[derive(Debug)]
pub struct FileSession {
    store: Arc<dyn Store>,
    uploads: Arc<Uploads>,
    limits: FileLimits,
    access: Arc<Access>,
    quotas: Arc<Quotas>,
    /// What this connection may do: the anonymous right, or its credential's.
    right: Right,
    /// Whom its uploads count against.
    principal: Principal,
    deadline: Deadline,
    /// The connection's id, for log lines.
    id: u64,
    buf: Vec<u8>,
    /// [`OUTPUT_LIMIT`] bytes or more wait for the peer: the next request waits until they
    /// have gone ([`Session::handle_drained`]).
    output_full: bool,
    client: Option<u64>,
    state: State,
    /// The job whose result the state waits for ([`NO_JOB`] if none): a result with another
    /// token is stale (its upload was cancelled meanwhile) and is dropped, partial file and all.
    job: Token,
    /// Jobs started, for their tokens.
    jobs: u64,
    /// Urgent data arrived: input is dropped until its mark.
    until_mark: bool,
    /// Over the upload rate: no input before this.
    paused_until: Option<Instant>,
    /// While an upload runs: when to look for a cancel from the control endpoint, which cannot
    /// wake this session, in case no input comes to reveal it.
    cancel_check: Option<Instant>,
    /// The peer closed while a request waited: close once it is answered.
    read_closed: bool,
    done: bool,
}

/// No job awaited; no job is started with it.
const NO_JOB: Token = Token(0);
/// Body bytes gathered while a write is in flight before input waits for it.
pub const PENDING: usize = 256 * 1024;
/// Bytes buffered behind a waiting request before input waits for its answer.
pub const WAIT_BUFFER: usize = 4 * (MAX_FRAME + 4);
/// Body bytes taken per input while rate-limited, beyond the rate: one burst.
const BURST: u64 = 64 * 1024;
/// While an upload runs, look at least this often for a cancel from the control endpoint.
pub const CANCEL_POLL: Duration = Duration::from_millis(5);
/// Bytes waiting for the peer beyond which no further request is answered until they are sent.
/// A file being sent counts whole, though it is not in memory: requests behind a download wait
/// for it, which costs a pipelining client one round trip at most.
pub const OUTPUT_LIMIT: u64 = 256 * 1024;
/// Bytes waiting for the peer at which a pushed callback disconnects it instead (a client that
/// holds leases and never reads). Above [`OUTPUT_LIMIT`]: answers alone never reach it.
pub const CALLBACK_BACKLOG: u64 = OUTPUT_LIMIT + 2 * LIST_PAGE as u64;

fn reply(out: &mut Out, reply: &Reply) {
    let mut bytes = Vec::new();
    reply.encode(&mut bytes);
    out.send(&bytes);
}

fn error(out: &mut Out, code: ErrorCode, message: impl Into<String>) {
    reply(out, &Reply::Error { code, message: message.into() });
}

impl FileSession {
    /// Restart the clock of a body that must keep coming: the read timeout runs from now (the
    /// last byte, or the moment the session was ready for more).
    fn body_clock(&mut self, now: Instant) {
        self.deadline.input(now, false);
        self.deadline.input(now, true);
    }

    fn finish(&mut self, out: &mut Out) {
        self.done = true;
        self.buf = Vec::new();
        // Dropping an unfinished upload removes its partial file.
        self.state = State::Frames;
        self.job = NO_JOB;
        out.close();
    }

    /// Start `work` as a job whose result the session now waits for.
    fn start(&mut self, work: impl FnOnce() -> FileDone + Send + 'static, out: &mut Out) {
        self.jobs += 1;
        self.job = Token(self.jobs);
        out.job(self.job, Job::blocking(work));
    }

    /// Let a stopped upload go on a job: closing a large partial file frees its blocks, which
    /// may take milliseconds that the connection (and, under `event`, every other) should not
    /// wait for. Nobody waits for the job's result.
    fn discard(&mut self, upload: Upload, out: &mut Out) {
        self.jobs += 1;
        out.job(
            Token(self.jobs),
            Job::blocking(move || {
                drop(upload);
                FileDone::Discarded
            }),
        );
    }

    /// Wait for `work`'s result in `waiting`.
    fn wait_for(&mut self, waiting: Waiting, work: impl FnOnce() -> FileDone + Send + 'static, out: &mut Out) {
        self.start(work, out);
        self.state = State::Wait(waiting);
    }

    /// Answer every complete frame in the buffer, until one waits, a body begins, or the
    /// answers queued reach [`OUTPUT_LIMIT`].
    fn process(&mut self, now: Instant, out: &mut Out) {
        while !self.done && matches!(self.state, State::Frames) {
            if out.pending_len() >= OUTPUT_LIMIT {
                self.output_full = true;
                break;
            }
            match Request::decode(&self.buf) {
                Ok(Some((request, used))) => {
                    self.buf.drain(..used);
                    self.request(now, request, out);
                }
                Ok(None) => break,
                Err(e) => {
                    error(out, ErrorCode::Protocol, e.to_string());
                    out.log(Level::Debug, format!("files {:x}: closing: {e}", self.id));
                    return self.finish(out);
                }
            }
        }
        // A body may begin inside what was buffered.
        if !self.done && !self.buf.is_empty() && matches!(self.state, State::Body(_) | State::Skip { .. }) {
            let rest = std::mem::take(&mut self.buf);
            self.body(now, &rest, out);
        }
    }

    /// A wait is over: go on with the frames behind it, or close if the peer has.
    fn resume(&mut self, now: Instant, out: &mut Out) {
        // Whatever clock ran before the wait (a body's, say) is the peer's no longer.
        self.deadline.input(now, false);
        self.process(now, out);
        if self.read_closed && matches!(self.state, State::Frames) && !self.done {
            self.finish(out);
        }
    }

    /// Whether this connection has `needed`; if not, the clear error is answered.
    fn allowed(&self, needed: Right, what: &str, out: &mut Out) -> bool {
        if self.right >= needed {
            return true;
        }
        let message = match (self.right, needed) {
            (Right::Read, Right::Write) => format!("{what} needs the write right; this connection may only read"),
            _ => format!("{what} needs a credential: no anonymous access"),
        };
        error(out, ErrorCode::Denied, message);
        false
    }

    fn request(&mut self, now: Instant, request: Request, out: &mut Out) {
        let path_of = |raw: &str, out: &mut Out| match FilePath::parse(raw) {
            Ok(path) => Some(path),
            Err(e) => {
                error(out, ErrorCode::BadPath, e.to_string());
                None
            }
        };
        let store = self.store.clone();
        match request {
            Request::Auth { token } => match self.access.authenticate(&token) {
                Some(credential) => {
                    self.right = credential.right.max(self.access.anonymous);
                    self.principal = Principal::Token(credential.name.clone());
                    out.log(Level::Debug, format!("files {:x}: speaks for {}", self.id, self.principal));
                    reply(out, &Reply::Authorized { right: self.right });
                }
                None => {
                    // Like a failed SSH login: said once, then the connection ends.
                    error(out, ErrorCode::Denied, "unknown credential");
                    out.log(Level::Info, format!("files {:x}: closing: unknown credential", self.id));
                    self.finish(out);
                }
            },
            Request::Hello { client, key } => {
                if !self.allowed(Right::Read, "Hello", out) {
                    return;
                }
                let (client, key) = if client == 0 {
                    match self.access.new_client() {
                        Ok(identity) => identity,
                        Err(e) => return error(out, ErrorCode::Io, e.to_string()),
                    }
                } else if self.access.proves(client, &key) {
                    (client, key)
                } else {
                    let message = format!(
                        "the key does not prove client {client:016x}; say Hello as client 0 for a new identity"
                    );
                    return error(out, ErrorCode::Denied, message);
                };
                self.client = Some(client);
                out.hub(FileRequest::Hello { client });
                self.state = State::Wait(Waiting::Hello { client, key });
            }
            Request::Stat { path } => {
                if !self.allowed(Right::Read, "Stat", out) {
                    return;
                }
                let Some(path) = path_of(&path, out) else { return };
                self.wait_for(Waiting::Stat, move || FileDone::Stat(store.stat(&path)), out);
            }
            Request::List { path, after } => {
                if !self.allowed(Right::Read, "List", out) {
                    return;
                }
                let Some(path) = path_of(&path, out) else { return };
                // At most what one page can hold (each entry takes 11 bytes and its name).
                let max = LIST_PAGE / 11;
                self.wait_for(Waiting::List, move || FileDone::List(store.list(&path, &after, max)), out);
            }
            Request::Get { path, have } => {
                if !self.allowed(Right::Read, "Get", out) {
                    return;
                }
                let Some(path) = path_of(&path, out) else { return };
                match self.client {
                    // Leased first, read second: a change after the lease calls this client back.
                    Some(client) => {
                        out.hub(FileRequest::Grant { client, path: path.to_string() });
                        self.state = State::Wait(Waiting::Lease { path, have });
                    }
                    None => self.open(path, have, 0, out),
                }
            }
            Request::Put { size, path } => self.put(now, size, &path, out),
            Request::Delete { path } => {
                if !self.allowed(Right::Write, "Delete", out) {
                    return;
                }
                let Some(path) = path_of(&path, out) else { return };
                out.hub(FileRequest::Intent { path: path.to_string() });
                self.state = State::Wait(Waiting::DeleteIntent(path));
            }
            Request::Cancel { .. } => {
                error(out, ErrorCode::Protocol, "Cancel belongs on the control endpoint");
                self.finish(out);
            }
        }
    }

    fn open(&mut self, path: FilePath, have: u64, lease_ms: u32, out: &mut Out) {
        let store = self.store.clone();
        self.wait_for(Waiting::Open { have, lease_ms }, move || FileDone::Open(store.open(&path)), out);
    }

    fn opened(opened: Result<Body, StoreError>, have: u64, lease_ms: u32, out: &mut Out) {
        match opened {
            Ok(body) if body.meta.version == have => {
                reply(out, &Reply::NotModified { version: have, lease_ms });
            }
            Ok(body) => {
                let size = body.meta.size;
                reply(out, &Reply::File { version: body.meta.version, size, lease_ms });
                match body.data {
                    BodyData::File(file) => out.send_file(file, 0, size),
                    BodyData::Bytes(bytes) => out.send(&bytes),
                }
            }
            Err(e) => error(out, e.code(), e.to_string()),
        }
    }

    /// Begin an upload: every refusal comes before anything is stored, then the partial file is
    /// made under a fresh id, told to the client with `Ready`.
    fn put(&mut self, now: Instant, size: u64, raw: &str, out: &mut Out) {
        if !self.allowed(Right::Write, "Put", out) {
            return self.finish(out);
        }
        let path = match FilePath::parse(raw) {
            Ok(path) if !path.is_root() => path,
            Ok(_) => {
                error(out, ErrorCode::WrongKind, "cannot upload to the root");
                return self.finish(out);
            }
            Err(e) => {
                error(out, ErrorCode::BadPath, e.to_string());
                return self.finish(out);
            }
        };
        if size > self.limits.max_upload {
            let message = format!("{size} bytes is over the limit of {} per upload", self.limits.max_upload);
            error(out, ErrorCode::TooLarge, message);
            return self.finish(out);
        }
        let quota = match self.quotas.reserve(&self.principal, size, self.limits.max_in_flight) {
            Ok(quota) => quota,
            Err(held) => {
                let limit = self.limits.max_in_flight;
                let message = format!("{size} more bytes in flight: {held} of {limit} are already in uploads of yours");
                out.log(Level::Info, format!("files {:x}: {} over quota: {message}", self.id, self.principal));
                error(out, ErrorCode::Quota, message);
                return self.finish(out);
            }
        };
        let (store, uploads, target) = (self.store.clone(), self.uploads.clone(), path.clone());
        let begin = move || {
            let begun = uploads.fresh_id().and_then(|id| {
                let sink = store.create(&target, id)?;
                uploads.begin(id, sink)
            });
            FileDone::Began(begun)
        };
        self.wait_for(Waiting::Begin { path, size, started: now, urgent: false, quota }, begin, out);
    }

    /// Body bytes (or bytes to skip); what follows the body goes to the frame buffer.
    fn body(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        match &mut self.state {
            State::Skip { left } => {
                let take = (*left).min(data.len() as u64) as usize;
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::Frames;
                    self.deadline.input(now, false);
                    self.buf.extend_from_slice(&data[take..]);
                    self.process(now, out);
                }
            }
            // A cancel from the control endpoint is seen at the next input, without waiting
            // for the write in flight or the next look at the flag.
            State::Body(r) if r.cancelled.is_cancelled() => {
                self.stopped(now, UploadError::Cancelled, out);
                // The rest of the body is skipped, or frames follow it.
                self.handle_input(now, data, out);
            }
            State::Body(r) => {
                let take = r.left.min(data.len() as u64) as usize;
                r.left -= take as u64;
                r.taken += take as u64;
                r.pending.extend_from_slice(&data[..take]);
                // Frames behind the body wait for the upload to finish.
                self.buf.extend_from_slice(&data[take..]);
                self.write_more(now, out);
            }
            _ => {}
        }
    }

    /// Start the next write if none is in flight; once the whole body is written, the sync.
    fn write_more(&mut self, now: Instant, out: &mut Out) {
        let State::Body(r) = &mut self.state else { return };
        let ready = !r.pending.is_empty() || r.left == 0;
        let Some(upload) = r.upload.take_if(|_| ready) else {
            if r.upload.is_some() {
                // Waiting for more body: look for a control cancel meanwhile, and keep the rate.
                self.cancel_check = Some(now + CANCEL_POLL);
                self.throttle(now);
            }
            return;
        };
        if !r.pending.is_empty() {
            let data = std::mem::take(&mut r.pending);
            self.cancel_check = Some(now + CANCEL_POLL);
            self.start(
                move || {
                    let result = upload.write(&data);
                    FileDone::Wrote(upload, data, result)
                },
                out,
            );
            return self.throttle(now);
        }
        // Everything is written: sync, then journal the intent before the rename.
        let State::Body(r) = std::mem::replace(&mut self.state, State::Frames) else { unreachable!() };
        self.cancel_check = None;
        self.paused_until = None;
        self.wait_for(
            Waiting::Sync(r),
            move || {
                let result = upload.sync();
                FileDone::Synced(upload, result)
            },
            out,
        );
    }

    /// A write failed, or a cancel from the control endpoint was noticed.
    fn stopped(&mut self, now: Instant, e: UploadError, out: &mut Out) {
        let State::Body(r) = std::mem::replace(&mut self.state, State::Frames) else { return };
        // A write still in flight is stale now; its upload is dropped when it comes back.
        self.job = NO_JOB;
        self.paused_until = None;
        self.cancel_check = None;
        match e {
            UploadError::Cancelled => {
                out.log(
                    Level::Info,
                    format!("files {:x}: upload {:016x} cancelled after {} bytes", self.id, r.id, r.written),
                );
                reply(out, &Reply::Cancelled { id: r.id, received: r.written });
                // Bytes taken but not written were body too; the rest of it is skipped. Only
                // once the body is all in can frames be buffered behind it.
                if r.left > 0 {
                    self.state = State::Skip { left: r.left };
                }
                self.resume(now, out);
            }
            e => {
                error(out, ErrorCode::Io, e.to_string());
                out.log(Level::Error, format!("files {:x}: upload to {}: {e}", self.id, r.path));
                self.finish(out);
            }
        }
    }

    /// Beyond the upload rate, hold input back until the rate catches up.
    fn throttle(&mut self, now: Instant) {
        let State::Body(r) = &self.state else { return };
        let rate = self.limits.upload_rate;
        if rate == 0 {
            return;
        }
        let allowed = BURST + (now.saturating_duration_since(r.started).as_secs_f64() * rate as f64) as u64;
        self.paused_until = (r.taken >= allowed)
            .then(|| r.started + Duration::from_secs_f64((r.taken + 1 - BURST) as f64 / rate as f64));
    }

    /// The hub answered the request this session waits for.
    fn answered(&mut self, now: Instant, msg: FileMessage, out: &mut Out) {
        let State::Wait(waiting) = std::mem::replace(&mut self.state, State::Frames) else {
            out.log(Level::Error, format!("files {:x}: an answer from the hub nobody asked for", self.id));
            return;
        };
        match (waiting, msg) {
            (Waiting::Hello { client, key }, FileMessage::Welcome { lease_ms }) => {
                reply(out, &Reply::Welcome { lease_ms, client, key })
            }
            (Waiting::Lease { path, have }, FileMessage::Granted { lease_ms }) => {
                return self.open(path, have, lease_ms, out);
            }
            (Waiting::Intent(r), FileMessage::Noted) => {
                let Receiving { upload, id, written, path, _quota, .. } = *r;
                let Some(upload) = upload else { unreachable!("the upload is home while journaling") };
                return self.wait_for(
                    Waiting::Commit { id, written, path, _quota },
                    move || FileDone::Committed(upload.commit()),
                    out,
                );
            }
            (Waiting::DeleteIntent(path), FileMessage::Noted) => {
                let (store, target) = (self.store.clone(), path.clone());
                return self.wait_for(Waiting::Delete(path), move || FileDone::Deleted(store.delete(&target)), out);
            }
            (Waiting::Changed(done), FileMessage::Noted) => reply(out, &done),
            (waiting, msg) => {
                out.log(Level::Error, format!("files {:x}: hub answered {msg:?} to {waiting:?}", self.id));
                return self.finish(out);
            }
        }
        self.resume(now, out);
    }

    /// A job this session waits for finished.
    fn completed(&mut self, now: Instant, done: FileDone, out: &mut Out) {
        match done {
            FileDone::Wrote(upload, mut data, result) => {
                let State::Body(r) = &mut self.state else { return };
                if let Err(e) = result {
                    self.stopped(now, e, out);
                    return self.discard(upload, out);
                }
                r.written += data.len() as u64;
                r.upload = Some(upload);
                if r.pending.is_empty() {
                    // The buffer goes round again instead of a new one.
                    data.clear();
                    r.pending = data;
                }
                self.write_more(now, out);
            }
            done => self.finished(now, done, out),
        }
    }

    /// A job of a waiting request finished.
    fn finished(&mut self, now: Instant, done: FileDone, out: &mut Out) {
        let State::Wait(waiting) = std::mem::replace(&mut self.state, State::Frames) else { return };
        match (waiting, done) {
            (Waiting::Stat, FileDone::Stat(meta)) => match meta {
                Ok(meta) => reply(out, &Reply::Stat(meta)),
                Err(e) => error(out, e.code(), e.to_string()),
            },
            (Waiting::List, FileDone::List(entries)) => match entries {
                Ok((entries, more)) => reply(out, &Reply::List { truncated: more, entries }),
                Err(e) => error(out, e.code(), e.to_string()),
            },
            (Waiting::Open { have, lease_ms }, FileDone::Open(opened)) => Self::opened(opened, have, lease_ms, out),
            (Waiting::Begin { urgent: true, .. }, began) => {
                // Dropped, the upload takes its partial file with it before the answer.
                let id = match &began {
                    FileDone::Began(Ok(upload)) => upload.id(),
                    _ => 0,
                };
                drop(began);
                out.log(Level::Info, format!("files {:x}: upload {id:016x} cancelled by urgent data", self.id));
                reply(out, &Reply::Cancelled { id, received: 0 });
                if self.until_mark {
                    // What came before the mark was body.
                    self.buf.clear();
                }
            }
            (Waiting::Begin { path, size, started, quota, .. }, FileDone::Began(began)) => {
                let upload = match began {
                    Ok(upload) => upload,
                    Err(UploadError::Store(e)) => {
                        error(out, e.code(), e.to_string());
                        return self.finish(out);
                    }
                    Err(e) => {
                        error(out, ErrorCode::Io, e.to_string());
                        return self.finish(out);
                    }
                };
                let id = upload.id();
                out.log(
                    Level::Debug,
                    format!("files {:x}: upload {id:016x} of {size} bytes to {path} by {}", self.id, self.principal),
                );
                reply(out, &Reply::Ready { id });
                let cancelled = upload.cancel_flag();
                let (taken, written, pending) = (0, 0, Vec::new());
                let r = Receiving {
                    upload: Some(upload),
                    cancelled,
                    id,
                    path,
                    left: size,
                    taken,
                    written,
                    pending,
                    started,
                    _quota: quota,
                };
                self.state = State::Body(Box::new(r));
                self.body_clock(now);
                // The body may have arrived meanwhile; an empty one is complete already.
                let rest = std::mem::take(&mut self.buf);
                self.body(now, &rest, out);
                return;
            }
            (Waiting::Sync(mut r), FileDone::Synced(upload, result)) => {
                if let Err(e) = result {
                    match e {
                        UploadError::Cancelled => reply(out, &Reply::Cancelled { id: r.id, received: r.written }),
                        e => error(out, ErrorCode::Io, e.to_string()),
                    }
                } else {
                    r.upload = Some(upload);
                    out.hub(FileRequest::Intent { path: r.path.to_string() });
                    self.state = State::Wait(Waiting::Intent(r));
                    return;
                }
            }
            (Waiting::Commit { id, written, path, .. }, FileDone::Committed(committed)) => {
                let done = match committed {
                    Ok(meta) => Reply::Done { version: meta.version },
                    Err(UploadError::Cancelled) => Reply::Cancelled { id, received: written },
                    Err(e) => Reply::Error { code: ErrorCode::Io, message: e.to_string() },
                };
                // Journaled whatever happened: it clears the intent.
                out.hub(FileRequest::Changed { path: path.to_string() });
                self.state = State::Wait(Waiting::Changed(done));
                return;
            }
            (Waiting::Delete(path), FileDone::Deleted(deleted)) => {
                let done = match deleted {
                    Ok(()) => Reply::Deleted,
                    Err(e) => Reply::Error { code: e.code(), message: e.to_string() },
                };
                out.hub(FileRequest::Changed { path: path.to_string() });
                self.state = State::Wait(Waiting::Changed(done));
                return;
            }
            (waiting, done) => {
                out.log(Level::Error, format!("files {:x}: {done:?} came back to {waiting:?}", self.id));
                return self.finish(out);
            }
        }
        self.resume(now, out);
    }
}

impl Session for FileSession {
    type Request = FileRequest;
    type Message = FileMessage;
    type Done = FileDone;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        if self.done || self.until_mark {
            // Before the urgent mark: the rest of a cancelled upload.
            return;
        }
        if matches!(self.state, State::Body(_) | State::Skip { .. }) {
            self.body_clock(now);
            return self.body(now, data, out);
        }
        self.buf.extend_from_slice(data);
        if matches!(self.state, State::Wait(_)) {
            // Answered in order: these wait (and past WAIT_BUFFER, so does the peer).
            return;
        }
        self.process(now, out);
        self.deadline.input(now, !self.buf.is_empty() && matches!(self.state, State::Frames));
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        match &self.state {
            // The whole body is in: the upload finishes, then the connection closes.
            State::Wait(_) => self.read_closed = true,
            State::Body(r) if r.left == 0 => self.read_closed = true,
            // Requests wait for the answers before them to drain: answered, then closed.
            State::Frames if self.output_full => self.read_closed = true,
            state => {
                // An upload cut short leaves nothing behind; answers already queued still go out.
                if matches!(state, State::Body(_)) {
                    out.log(Level::Debug, format!("files {:x}: peer closed during an upload", self.id));
                }
                self.finish(out);
            }
        }
    }

    fn handle_message(&mut self, now: Instant, msg: FileMessage, out: &mut Out) {
        if self.done {
            return;
        }
        match msg {
            FileMessage::Callback { path } if out.pending_len() >= CALLBACK_BACKLOG => {
                // It does not read: its queue must not grow with every change. Leases bound
                // what it misses (it revalidates when they end).
                out.log(
                    Level::Info,
                    format!("files {:x}: closing: too far behind to take callbacks ({path})", self.id),
                );
                self.finish(out);
            }
            FileMessage::Callback { path } => reply(out, &Reply::Callback { path }),
            msg => self.answered(now, msg, out),
        }
    }

    fn handle_completion(&mut self, now: Instant, token: Token, done: FileDone, out: &mut Out) {
        if self.done || token != self.job {
            // Stale: an upload in it goes, and its partial file with it.
            if let (false, FileDone::Wrote(upload, ..) | FileDone::Synced(upload, _) | FileDone::Began(Ok(upload))) =
                (self.done, done)
            {
                self.discard(upload, out);
            }
            return;
        }
        self.job = NO_JOB;
        self.completed(now, done, out);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if self.done {
            return;
        }
        if self.cancel_check.is_some_and(|at| now >= at) {
            self.cancel_check = Some(now + CANCEL_POLL);
            // A cancel from the control endpoint: answer it without waiting for input, or for
            // a write in flight.
            if let State::Body(r) = &self.state
                && r.cancelled.is_cancelled()
            {
                return self.stopped(now, UploadError::Cancelled, out);
            }
        }
        if self.paused_until.is_some_and(|at| now >= at) {
            self.paused_until = None;
            self.deadline.touch(now);
            self.throttle(now);
        }
        if matches!(self.state, State::Wait(_)) {
            return;
        }
        if let Some(why) = self.deadline.expired(now) {
            if matches!(self.state, State::Body(_)) && !self.wants_input() {
                // Not the peer's silence: the session is not reading (a write in flight, the rate).
                return self.body_clock(now);
            }
            let what =
                if matches!(self.state, State::Body(_) | State::Skip { .. }) { "upload body stalled: " } else { "" };
            out.log(Level::Debug, format!("files {:x}: closing: {what}{why}", self.id));
            self.finish(out);
        }
    }

    fn handle_drained(&mut self, now: Instant, out: &mut Out) {
        if self.output_full && !self.done {
            self.output_full = false;
            self.resume(now, out);
        }
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        // An upload in progress is abandoned: its partial file goes with it.
        self.finish(out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let deadline = match (self.paused_until, &self.state) {
            (Some(at), _) => Some(at.min(self.deadline.at())),
            (None, State::Wait(_)) => None,
            _ => Some(self.deadline.at()),
        };
        deadline.into_iter().chain(self.cancel_check).min()
    }

    fn wants_input(&self) -> bool {
        if self.paused_until.is_some() || self.output_full {
            return false;
        }
        match &self.state {
            State::Wait(_) => self.buf.len() < WAIT_BUFFER,
            State::Body(r) => r.pending.len() < PENDING && self.buf.len() < WAIT_BUFFER,
            State::Frames | State::Skip { .. } => true,
        }
    }

    fn handle_urgent(&mut self, now: Instant, urgent: Urgent, out: &mut Out) {
        if self.done {
            return;
        }
        match urgent {
            Urgent::Pointer if !self.until_mark => {
                self.until_mark = true;
                self.paused_until = None;
                if let State::Body(r) = &self.state {
                    // Through the registry: the name goes now, also while a write is in flight.
                    self.uploads.cancel(r.id);
                    let (id, received) = (r.id, r.written);
                    out.log(
                        Level::Info,
                        format!(
                            "files {:x}: upload {id:016x} cancelled by urgent data after {received} bytes",
                            self.id
                        ),
                    );
                    reply(out, &Reply::Cancelled { id, received });
                    // The upload in hand goes on a job; a write in flight is stale.
                    if let State::Body(r) = std::mem::replace(&mut self.state, State::Frames)
                        && let Some(upload) = r.upload
                    {
                        self.discard(upload, out);
                    }
                    self.job = NO_JOB;
                    self.cancel_check = None;
                } else if let State::Wait(Waiting::Begin { urgent, .. }) = &mut self.state {
                    // Before its first byte is written: it ends when it begins.
                    *urgent = true;
                }
            }
            Urgent::Pointer => {}
            Urgent::Mark(_) => {
                // The urgent byte ends the body; frames start afresh after it.
                self.until_mark = false;
                if matches!(self.state, State::Skip { .. }) {
                    self.state = State::Frames;
                }
                if matches!(self.state, State::Frames | State::Wait(Waiting::Begin { urgent: true, .. })) {
                    self.buf.clear();
                }
                self.deadline.input(now, false);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
