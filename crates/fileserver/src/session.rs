//! The file service's connection: frames in, replies and file bodies out, uploads to the store,
//! leases and callbacks through the hub, and both ways to cancel an upload.
//!
//! - **Frames** are answered in order. A request that needs the hub (`Hello`, `Get` with a
//!   client, the two steps of a commit) waits for its answer; frames behind it wait in the
//!   buffer (bounded).
//! - **An upload** (`Put` then `size` raw bytes) is written as it arrives, then synced, the
//!   intent journaled, renamed into place and the change journaled (callbacks go out), and only
//!   then `Done`. With [`FileLimits::upload_rate`] the session holds its input back
//!   ([`Session::wants_input`]) beyond the rate: the peer's window fills, as with a slow disk.
//! - **Cancelled through the control endpoint**, the upload's next write fails: the session
//!   answers `Cancelled` and drops the rest of the declared body (the client may also stop and
//!   half-close: the connection then closes).
//! - **Cancelled with TCP urgent data**: on [`Urgent::Pointer`] the upload stops and its
//!   partial file goes at once, `Cancelled` is sent, and input is dropped until
//!   [`Urgent::Mark`]; after the mark, frames resume (the urgent byte ends the body).
//! - A refused upload (bad path, too large, busy id, cancelled before it began) is answered and
//!   the connection closed: reading a body only to drop it is not worth the bandwidth.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use warren_proto::{ConnInfo, Deadline, Level, Limits, Output, Service, Session, Urgent};

use crate::cancel::{Upload, UploadError, Uploads};
use crate::journal::MemJournal;
use crate::leases::{FileMessage, FileRequest, LeaseHub};
use crate::path::FilePath;
use crate::store::{BodyData, Store};
use crate::wire::{ErrorCode, MAX_FRAME, Reply, Request};

type Out = Output<FileRequest>;

/// Limits and knobs of the file service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// Close a connection idle this long. Default 5 minutes.
    pub idle_timeout: Duration,
    /// Close a connection that started a frame and has not finished it within this long.
    /// Default 30 s.
    pub read_timeout: Duration,
    /// The largest upload. Default 1 TiB.
    pub max_upload: u64,
    /// Bytes per second one upload may take in; 0 for no limit (the default).
    pub upload_rate: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(30),
            max_upload: 1 << 40,
            upload_rate: 0,
        }
    }
}

/// The file service: one [`FileSession`] per connection, one [`LeaseHub`] per server.
pub struct FileService {
    pub store: Arc<dyn Store>,
    pub uploads: Arc<Uploads>,
    pub limits: FileLimits,
    /// The hub, made (and recovered from its journal) before serving; taken by `new_hub`.
    hub: Mutex<Option<LeaseHub>>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").field("limits", &self.limits).finish()
    }
}

impl FileService {
    pub fn new(store: Arc<dyn Store>, hub: LeaseHub, limits: FileLimits) -> Self {
        Self { store, uploads: Arc::default(), limits, hub: Mutex::new(Some(hub)) }
    }
}

impl Service for FileService {
    type Hub = LeaseHub;
    type Session = FileSession;

    fn name(&self) -> &'static str {
        "files"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> FileSession {
        let limits =
            Limits { idle_timeout: self.limits.idle_timeout, read_timeout: self.limits.read_timeout, max_request: 0 };
        FileSession {
            store: self.store.clone(),
            uploads: self.uploads.clone(),
            limits: self.limits.clone(),
            deadline: Deadline::new(&limits, now),
            id: info.id.0,
            buf: Vec::new(),
            client: None,
            state: State::Frames,
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

/// What a session is doing.
#[derive(Debug)]
enum State {
    Frames,
    /// Waiting for the hub's answer to this.
    Hub(Waiting),
    /// Receiving an upload's body.
    Body(Box<Receiving>),
    /// The upload was cancelled through the control endpoint: dropping `left` more body bytes.
    Skip {
        left: u64,
    },
}

#[derive(Debug)]
struct Receiving {
    upload: Upload,
    path: FilePath,
    left: u64,
    received: u64,
    started: Instant,
}

#[derive(Debug)]
enum Waiting {
    Hello,
    Get {
        path: FilePath,
        have: u64,
    },
    /// The intent is being journaled; then the rename.
    Commit(Box<Receiving>),
    Delete(FilePath),
    /// The change is being journaled (callbacks going out); then this reply.
    Changed(Reply),
}

/// One file-service connection.
#[derive(Debug)]
pub struct FileSession {
    store: Arc<dyn Store>,
    uploads: Arc<Uploads>,
    limits: FileLimits,
    deadline: Deadline,
    /// The connection's id, for log lines.
    id: u64,
    buf: Vec<u8>,
    client: Option<u64>,
    state: State,
    /// Urgent data arrived: input is dropped until its mark.
    until_mark: bool,
    /// Over the upload rate: no input before this.
    paused_until: Option<Instant>,
    /// While an upload runs: when to look for a cancel from the control endpoint, which cannot
    /// wake this session, in case no input comes to reveal it.
    cancel_check: Option<Instant>,
    /// The peer closed while a request waited for the hub: close once it is answered.
    read_closed: bool,
    done: bool,
}

/// Body bytes taken per input while rate-limited, beyond the rate: one burst.
const BURST: u64 = 64 * 1024;
/// While an upload runs, look at least this often for a cancel from the control endpoint.
const CANCEL_POLL: Duration = Duration::from_millis(5);

fn reply(out: &mut Out, reply: &Reply) {
    let mut bytes = Vec::new();
    reply.encode(&mut bytes);
    out.send(&bytes);
}

fn error(out: &mut Out, code: ErrorCode, message: impl Into<String>) {
    reply(out, &Reply::Error { code, message: message.into() });
}

impl FileSession {
    fn finish(&mut self, out: &mut Out) {
        self.done = true;
        self.buf = Vec::new();
        // Dropping an unfinished upload removes its partial file.
        self.state = State::Frames;
        out.close();
    }

    /// Answer every complete frame in the buffer, until one waits for the hub or a body begins.
    fn process(&mut self, now: Instant, out: &mut Out) {
        while !self.done && matches!(self.state, State::Frames) {
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

    fn request(&mut self, now: Instant, request: Request, out: &mut Out) {
        let path_of = |raw: &str, out: &mut Out| match FilePath::parse(raw) {
            Ok(path) => Some(path),
            Err(e) => {
                error(out, ErrorCode::BadPath, e.to_string());
                None
            }
        };
        match request {
            Request::Hello { client } => {
                self.client = Some(client);
                out.hub(FileRequest::Hello { client });
                self.state = State::Hub(Waiting::Hello);
            }
            Request::Stat { path } => {
                let Some(path) = path_of(&path, out) else { return };
                match self.store.stat(&path) {
                    Ok(meta) => reply(out, &Reply::Stat(meta)),
                    Err(e) => error(out, e.code(), e.to_string()),
                }
            }
            Request::List { path } => {
                let Some(path) = path_of(&path, out) else { return };
                match self.store.list(&path) {
                    Ok(entries) => reply(out, &Reply::List { truncated: false, entries }),
                    Err(e) => error(out, e.code(), e.to_string()),
                }
            }
            Request::Get { path, have } => {
                let Some(path) = path_of(&path, out) else { return };
                match self.client {
                    // Leased first, read second: a change after the lease calls this client back.
                    Some(client) => {
                        out.hub(FileRequest::Grant { client, path: path.to_string() });
                        self.state = State::Hub(Waiting::Get { path, have });
                    }
                    None => self.get(&path, have, 0, out),
                }
            }
            Request::Put { id, size, path } => self.put(now, id, size, &path, out),
            Request::Delete { path } => {
                let Some(path) = path_of(&path, out) else { return };
                out.hub(FileRequest::Intent { path: path.to_string() });
                self.state = State::Hub(Waiting::Delete(path));
            }
            Request::Cancel { .. } => {
                error(out, ErrorCode::Protocol, "Cancel belongs on the control endpoint");
                self.finish(out);
            }
        }
    }

    fn get(&self, path: &FilePath, have: u64, lease_ms: u32, out: &mut Out) {
        match self.store.open(path) {
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

    fn put(&mut self, now: Instant, id: u64, size: u64, raw: &str, out: &mut Out) {
        let refused = |out: &mut Out, code, message: String| {
            error(out, code, message);
        };
        if self.uploads.is_refused(id) {
            reply(out, &Reply::Cancelled { id, received: 0 });
            return self.finish(out);
        }
        let path = match FilePath::parse(raw) {
            Ok(path) if !path.is_root() => path,
            Ok(_) => {
                refused(out, ErrorCode::WrongKind, "cannot upload to the root".into());
                return self.finish(out);
            }
            Err(e) => {
                refused(out, ErrorCode::BadPath, e.to_string());
                return self.finish(out);
            }
        };
        if size > self.limits.max_upload {
            refused(out, ErrorCode::TooLarge, format!("{size} bytes is over the limit of {}", self.limits.max_upload));
            return self.finish(out);
        }
        let upload =
            match self.store.create(&path, id).map_err(UploadError::from).and_then(|sink| self.uploads.begin(id, sink))
            {
                Ok(upload) => upload,
                Err(UploadError::Cancelled) => {
                    reply(out, &Reply::Cancelled { id, received: 0 });
                    return self.finish(out);
                }
                Err(UploadError::Busy) => {
                    refused(out, ErrorCode::Busy, format!("upload {id:016x} is already running"));
                    return self.finish(out);
                }
                Err(UploadError::Store(e)) => {
                    refused(out, e.code(), e.to_string());
                    return self.finish(out);
                }
            };
        out.log(Level::Debug, format!("files {:x}: upload {id:016x} of {size} bytes to {path}", self.id));
        let receiving = Box::new(Receiving { upload, path, left: size, received: 0, started: now });
        if size == 0 {
            self.complete(receiving, out);
        } else {
            self.state = State::Body(receiving);
        }
    }

    /// Body bytes (or bytes to skip); what follows the body goes back to the frame buffer.
    fn body(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        match &mut self.state {
            State::Skip { left } => {
                let take = (*left).min(data.len() as u64) as usize;
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::Frames;
                    self.buf.extend_from_slice(&data[take..]);
                    self.process(now, out);
                }
            }
            State::Body(r) => {
                let take = r.left.min(data.len() as u64) as usize;
                if let Err(e) = r.upload.write(&data[..take]) {
                    // The refused bytes are body too: skipped with the rest.
                    return self.stopped(now, e, data, out);
                }
                r.left -= take as u64;
                r.received += take as u64;
                if r.left > 0 {
                    self.cancel_check = Some(now + CANCEL_POLL);
                    return self.throttle(now);
                }
                self.cancel_check = None;
                let State::Body(r) = std::mem::replace(&mut self.state, State::Frames) else { unreachable!() };
                self.buf.extend_from_slice(&data[take..]);
                self.paused_until = None;
                self.complete(r, out);
                self.process(now, out);
            }
            _ => {}
        }
    }

    /// A write failed: cancelled from the control endpoint, or the disk said no.
    fn stopped(&mut self, now: Instant, e: UploadError, rest: &[u8], out: &mut Out) {
        let State::Body(r) = std::mem::replace(&mut self.state, State::Frames) else { return };
        self.paused_until = None;
        self.cancel_check = None;
        match e {
            UploadError::Cancelled => {
                out.log(
                    Level::Info,
                    format!("files {:x}: upload {:016x} cancelled after {} bytes", self.id, r.upload.id(), r.received),
                );
                reply(out, &Reply::Cancelled { id: r.upload.id(), received: r.received });
                self.state = State::Skip { left: r.left };
                self.body(now, rest, out);
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
        self.paused_until = (r.received >= allowed)
            .then(|| r.started + Duration::from_secs_f64((r.received + 1 - BURST) as f64 / rate as f64));
    }

    /// The whole body is in: sync, then journal the intent before the rename.
    fn complete(&mut self, r: Box<Receiving>, out: &mut Out) {
        if let Err(e) = r.upload.sync() {
            return self.stopped_early(&r, e, out);
        }
        out.hub(FileRequest::Intent { path: r.path.to_string() });
        self.state = State::Hub(Waiting::Commit(r));
    }

    fn stopped_early(&mut self, r: &Receiving, e: UploadError, out: &mut Out) {
        match e {
            UploadError::Cancelled => reply(out, &Reply::Cancelled { id: r.upload.id(), received: r.received }),
            e => error(out, ErrorCode::Io, e.to_string()),
        }
        self.state = State::Frames;
    }

    /// The hub answered the request this session waits for.
    fn answered(&mut self, now: Instant, msg: FileMessage, out: &mut Out) {
        let State::Hub(waiting) = std::mem::replace(&mut self.state, State::Frames) else {
            out.log(Level::Error, format!("files {:x}: an answer from the hub nobody asked for", self.id));
            return;
        };
        match (waiting, msg) {
            (Waiting::Hello, FileMessage::Welcome { lease_ms }) => reply(out, &Reply::Welcome { lease_ms }),
            (Waiting::Get { path, have }, FileMessage::Granted { lease_ms }) => self.get(&path, have, lease_ms, out),
            (Waiting::Commit(r), FileMessage::Noted) => {
                let (id, received, path) = (r.upload.id(), r.received, r.path.to_string());
                let done = match r.upload.commit() {
                    Ok(meta) => Reply::Done { version: meta.version },
                    Err(UploadError::Cancelled) => Reply::Cancelled { id, received },
                    Err(e) => Reply::Error { code: ErrorCode::Io, message: e.to_string() },
                };
                // Journaled whatever happened: it clears the intent.
                out.hub(FileRequest::Changed { path });
                self.state = State::Hub(Waiting::Changed(done));
                return;
            }
            (Waiting::Delete(path), FileMessage::Noted) => {
                let done = match self.store.delete(&path) {
                    Ok(()) => Reply::Deleted,
                    Err(e) => Reply::Error { code: e.code(), message: e.to_string() },
                };
                out.hub(FileRequest::Changed { path: path.to_string() });
                self.state = State::Hub(Waiting::Changed(done));
                return;
            }
            (Waiting::Changed(done), FileMessage::Noted) => reply(out, &done),
            (waiting, msg) => {
                out.log(Level::Error, format!("files {:x}: hub answered {msg:?} to {waiting:?}", self.id));
                return self.finish(out);
            }
        }
        self.process(now, out);
        if self.read_closed && matches!(self.state, State::Frames) {
            self.finish(out);
        }
    }
}

impl Session for FileSession {
    type Request = FileRequest;
    type Message = FileMessage;
    type Done = warren_proto::Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        if self.done || self.until_mark {
            // Before the urgent mark: the rest of a cancelled upload.
            return;
        }
        if matches!(self.state, State::Body(_) | State::Skip { .. }) {
            self.deadline.input(now, false);
            return self.body(now, data, out);
        }
        self.buf.extend_from_slice(data);
        if matches!(self.state, State::Hub(_)) {
            if self.buf.len() > 4 * (MAX_FRAME + 4) {
                error(out, ErrorCode::Protocol, "too much sent while a request waits");
                self.finish(out);
            }
            return;
        }
        self.process(now, out);
        self.deadline.input(now, !self.buf.is_empty() && matches!(self.state, State::Frames));
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        // An upload cut short leaves nothing behind; answers already queued still go out.
        if matches!(self.state, State::Body(_)) {
            out.log(Level::Debug, format!("files {:x}: peer closed during an upload", self.id));
        }
        if matches!(self.state, State::Hub(_)) {
            self.read_closed = true;
        } else {
            self.finish(out);
        }
    }

    fn handle_message(&mut self, now: Instant, msg: FileMessage, out: &mut Out) {
        if self.done {
            return;
        }
        match msg {
            FileMessage::Callback { path } => reply(out, &Reply::Callback { path }),
            msg => self.answered(now, msg, out),
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if self.done {
            return;
        }
        if self.cancel_check.is_some_and(|at| now >= at) {
            self.cancel_check = Some(now + CANCEL_POLL);
            // A cancel from the control endpoint: answer it without waiting for input.
            if let State::Body(r) = &self.state
                && r.upload.is_cancelled()
            {
                return self.stopped(now, UploadError::Cancelled, &[], out);
            }
        }
        if self.paused_until.is_some_and(|at| now >= at) {
            self.paused_until = None;
            self.deadline.touch(now);
            self.throttle(now);
        }
        if matches!(self.state, State::Hub(_)) {
            return;
        }
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("files {:x}: closing: {why}", self.id));
            self.finish(out);
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
            (None, State::Hub(_)) => None,
            _ => Some(self.deadline.at()),
        };
        deadline.into_iter().chain(self.cancel_check).min()
    }

    fn wants_input(&self) -> bool {
        self.paused_until.is_none()
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
                    r.upload.cancel();
                    let (id, received) = (r.upload.id(), r.received);
                    out.log(
                        Level::Info,
                        format!(
                            "files {:x}: upload {id:016x} cancelled by urgent data after {received} bytes",
                            self.id
                        ),
                    );
                    reply(out, &Reply::Cancelled { id, received });
                    // Dropping the receiving state drops the upload: the partial file is gone.
                    self.state = State::Frames;
                    self.cancel_check = None;
                }
            }
            Urgent::Pointer => {}
            Urgent::Mark(_) => {
                // The urgent byte ends the body; frames start afresh after it.
                self.until_mark = false;
                if matches!(self.state, State::Skip { .. }) {
                    self.state = State::Frames;
                }
                if matches!(self.state, State::Frames) {
                    self.buf.clear();
                }
                self.deadline.input(now, false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
