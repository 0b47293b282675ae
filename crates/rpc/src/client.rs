//! The caller's side: a multiplexed connection ([`Connection`]), the raw call every stub makes
//! ([`RawCall`]), and [`Target`], the handle a stub holds. A connection is a tower
//! [`Service`], and a [`Caller`] is any service that performs raw calls, so middleware
//! (location, replication and failure transparency) wraps a connection and the stub does not
//! know. [`ConnectionConfig`] sets how a connection waits for its answers (busy-polling).

mod busy_poll;
mod config;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tower::Service;
use tower::util::{BoxCloneSyncService, ServiceExt};

use self::busy_poll::BusyPoll;
pub use self::config::{ConnectionConfig, MAX_BUSY_POLL};
use crate::codec::Codec;
use crate::error::{CallError, Code, Failure, RpcError};
use crate::interface::{Context, Dispatch, Interface, ObjectRef};
use crate::wire::{self, Call, Frame, Outcome, Reply};

/// Frames queued for the socket before a caller waits: bounds what a connection holds for a
/// peer that does not read.
const OUTBOX_FRAMES: usize = 1024;

/// One call, before the stub's types are applied.
#[derive(Clone, Debug)]
pub struct RawCall {
    pub object: String,
    /// Empty (with version 0): whatever the object implements.
    pub interface: String,
    pub version: u32,
    pub method: String,
    /// The arguments as one tuple: postcard, or JSON when `json` is set.
    pub args: Vec<u8>,
    pub json: bool,
    /// How long the caller waits; the callee learns it too.
    pub timeout: Option<Duration>,
    /// Declared idempotent by the interface: middleware may send it more than once.
    pub idempotent: bool,
}

impl RawCall {
    /// The call as it goes on the wire, with `id`; its timeout as the milliseconds left (at
    /// least 1, so that a short one is not taken for none).
    pub fn into_frame(self, id: u64) -> Call {
        let timeout_ms = self.timeout.map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32);
        Call {
            id,
            object: self.object,
            interface: self.interface,
            version: self.version,
            method: self.method,
            json: self.json,
            timeout_ms,
            args: self.args,
        }
    }
}

/// The future of a raw call, as every service of raw calls returns it.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Failure>> + Send>>;

/// Whatever performs raw calls: a [`Connection`], or middleware around one.
pub type Caller = BoxCloneSyncService<RawCall, Vec<u8>, Failure>;

/// What a stub holds: where its calls go, the object's name, and the options of its calls.
#[derive(Clone)]
pub struct Target {
    caller: Caller,
    object: String,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("object", &self.object).field("timeout", &self.timeout).finish()
    }
}

impl Target {
    /// Calls on `object` through `caller`.
    pub fn new(caller: Caller, object: impl Into<String>) -> Self {
        Self { caller, object: object.into(), timeout: None }
    }

    /// Calls on `object` over `connection`.
    pub fn on(connection: &Connection, object: impl Into<String>) -> Self {
        Self::new(Caller::new(connection.clone()), object)
    }

    /// Every call gives up after `timeout` (the callee learns the deadline too).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same caller and options, on another object (one a reference named).
    pub fn to(&self, object: impl Into<String>) -> Self {
        Self { object: object.into(), ..self.clone() }
    }

    pub fn object(&self) -> &str {
        &self.object
    }

    /// Call `method` of `interface` with `args` (the parameters as a tuple): what every
    /// generated stub method does.
    pub async fn call<A, T, E>(&self, interface: &'static Interface, method: &str, args: &A) -> Result<T, CallError<E>>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let idempotent = interface.methods.iter().any(|m| m.name == method && m.idempotent);
        let raw = RawCall {
            object: self.object.clone(),
            interface: interface.name.to_owned(),
            version: interface.version,
            method: method.to_owned(),
            args: Codec::Binary.encode(args)?,
            json: false,
            timeout: self.timeout,
            idempotent,
        };
        match self.caller.clone().oneshot(raw).await {
            Ok(bytes) => Ok(Codec::Binary.decode(&bytes, "the result")?),
            Err(Failure::App(bytes)) => Err(CallError::App(Codec::Binary.decode(&bytes, "the error")?)),
            Err(Failure::Rpc(e)) => Err(CallError::Rpc(e)),
        }
    }
}

/// A connection to an object server: many calls in flight at once, each answered when its
/// object is done, in any order; objects exported on it ([`Connection::export`]) can be called
/// back by the server. Cheap to clone; the connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("closed", &self.shared.closed.load(Ordering::Relaxed)).finish()
    }
}

struct Shared {
    outbox: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_id: AtomicU64,
    exports: Mutex<HashMap<String, Arc<dyn Dispatch>>>,
    /// Calls the server made on exported objects and has not cancelled.
    serving: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    closed: AtomicBool,
    /// Set when the connection busy-polls for its answers.
    busy_poll: Option<Arc<BusyPoll>>,
}

impl Connection {
    /// Connect to the object server at `addr`, giving up after `timeout`. Needs a tokio runtime.
    pub async fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Connection> {
        Self::connect_with(addr, ConnectionConfig::default().connect_timeout(timeout)).await
    }

    /// Connect to the object server at `addr` with `config` (its connect timeout, and whether
    /// the connection busy-polls for answers). Needs a tokio runtime.
    pub async fn connect_with(addr: impl ToSocketAddrs, config: ConnectionConfig) -> io::Result<Connection> {
        config.check()?;
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
        stream.set_nodelay(true)?;
        Self::over_with(stream, config)
    }

    /// A connection over `stream`, already connected.
    pub fn over(stream: TcpStream) -> Connection {
        Self::start(stream, None)
    }

    /// A connection over `stream`, already connected, with `config` (its connect timeout is
    /// not used).
    pub fn over_with(stream: TcpStream, config: ConnectionConfig) -> io::Result<Connection> {
        config.check()?;
        Ok(Self::start(stream, config.busy_poll.map(|budget| Arc::new(BusyPoll::new(budget)))))
    }

    fn start(stream: TcpStream, busy_poll: Option<Arc<BusyPoll>>) -> Connection {
        let (read, write) = stream.into_split();
        let (outbox, queued) = mpsc::channel(OUTBOX_FRAMES);
        let shared = Arc::new(Shared {
            outbox,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            exports: Mutex::default(),
            serving: Mutex::default(),
            closed: AtomicBool::new(false),
            busy_poll: busy_poll.clone(),
        });
        tokio::spawn(write_frames(write, queued));
        // The reader holds the shared state weakly: dropping the last Connection closes the
        // outbox, the writer ends and shuts the socket, and the reader sees the end.
        tokio::spawn(read_frames(read, Arc::downgrade(&shared), busy_poll));
        Connection { shared }
    }

    /// Present `token` to a server that admits only callers holding one (`warren objects serve
    /// --callers-token-file`). Calls made after it carry it; the server does not answer it: a
    /// wrong token makes the calls fail `Unauthenticated`.
    pub async fn authenticate(&self, token: &str) -> Result<(), Failure> {
        let mut bytes = Vec::new();
        wire::encode(&Frame::Auth(token.to_owned()), &mut bytes)
            .map_err(|e| Failure::Rpc(RpcError::new(Code::BadArguments, format!("the token is too large: {e}"))))?;
        self.shared.outbox.send(bytes).await.map_err(|_| unavailable())
    }

    /// Whether the connection is gone (every call on it fails `Unavailable`).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Make `object` callable by the server over this connection, for as long as the
    /// connection lasts; pass the reference as an argument (the course's `WorkListener`).
    pub fn export(&self, object: Arc<dyn Dispatch>) -> ObjectRef {
        let interface = object.interface();
        let name = format!("callback-{}", self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        self.shared.exports.lock().expect("exports").insert(name.clone(), object);
        ObjectRef { addr: None, object: name, interface: interface.name.to_owned(), version: interface.version }
    }

    /// Stop serving an exported object.
    pub fn unexport(&self, reference: &ObjectRef) {
        self.shared.exports.lock().expect("exports").remove(&reference.object);
    }

    /// Perform `call`, waiting at most its timeout.
    pub async fn call(&self, call: RawCall) -> Result<Vec<u8>, Failure> {
        call_on(self.shared.clone(), call).await
    }
}

impl Service<RawCall> for Connection {
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        Box::pin(call_on(self.shared.clone(), call))
    }
}

fn unavailable() -> Failure {
    Failure::Rpc(RpcError::new(Code::Unavailable, "the connection to the object server is closed"))
}

async fn call_on(shared: Arc<Shared>, call: RawCall) -> Result<Vec<u8>, Failure> {
    if shared.closed.load(Ordering::Relaxed) {
        return Err(unavailable());
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let timeout = call.timeout;
    let frame = Frame::Call(call.into_frame(id));
    let mut bytes = Vec::new();
    wire::encode(&frame, &mut bytes)
        .map_err(|e| Failure::Rpc(RpcError::new(Code::BadArguments, format!("the call is too large: {e}"))))?;
    let (answer, answered) = oneshot::channel();
    shared.pending.lock().expect("pending").insert(id, answer);
    // The reader marks the connection closed, then drops every waiting call. A call that
    // checked before the mark and waits only after the drop would wait for ever: look again.
    if shared.closed.load(Ordering::SeqCst) {
        shared.pending.lock().expect("pending").remove(&id);
        return Err(unavailable());
    }
    // From here on, giving up (a dropped future, a deadline) tells the server.
    let mut guard = InFlight { shared: &shared, id, done: false };
    if shared.outbox.send(bytes).await.is_err() {
        return Err(unavailable());
    }
    if let Some(busy_poll) = &shared.busy_poll {
        busy_poll.call_sent();
    }
    let outcome = match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, answered).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(Failure::Rpc(RpcError::new(
                    Code::DeadlineExceeded,
                    format!("no answer within {} ms", timeout.as_millis()),
                )));
            }
        },
        None => answered.await,
    };
    guard.done = true;
    match outcome {
        Ok(Outcome::Ok(bytes)) => Ok(bytes),
        Ok(Outcome::App(bytes)) => Err(Failure::App(bytes)),
        Ok(Outcome::Err(e)) => Err(Failure::Rpc(e)),
        Err(_) => Err(unavailable()),
    }
}

/// A call sent and not answered: dropped early, it forgets the call and cancels it.
struct InFlight<'a> {
    shared: &'a Shared,
    id: u64,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.shared.pending.lock().expect("pending").remove(&self.id);
        let mut bytes = Vec::new();
        if wire::encode(&Frame::Cancel(self.id), &mut bytes).is_ok() {
            // A full outbox drops the cancel: the answer, when it comes, is dropped instead.
            let _ = self.shared.outbox.try_send(bytes);
        }
    }
}

/// Write queued frames, batching whatever is queued at once into one write.
async fn write_frames(mut socket: tokio::net::tcp::OwnedWriteHalf, mut queued: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(first) = queued.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match queued.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if socket.write_all(&batch).await.is_err() {
            break;
        }
    }
    let _ = socket.shutdown().await;
}

/// Read frames: replies go to their callers, calls to the exported objects.
async fn read_frames(
    mut socket: tokio::net::tcp::OwnedReadHalf,
    shared: std::sync::Weak<Shared>,
    busy_poll: Option<Arc<BusyPoll>>,
) {
    let mut input = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let waiting = || shared.upgrade().is_some_and(|s| !s.pending.lock().expect("pending").is_empty());
    'read: loop {
        let read = match &busy_poll {
            Some(busy_poll) => busy_poll.read(&socket, &mut chunk, waiting).await,
            None => socket.read(&mut chunk).await,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        let Some(shared) = shared.upgrade() else { break };
        let mut used = 0;
        loop {
            match wire::decode(&input[used..]) {
                Ok(Some((frame, len))) => {
                    used += len;
                    handle(&shared, frame);
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        input.drain(..used);
    }
    if let Some(shared) = shared.upgrade() {
        shared.closed.store(true, Ordering::SeqCst);
        // Dropping the senders answers every waiting call with `Unavailable`.
        shared.pending.lock().expect("pending").clear();
        for (_, cancelled) in shared.serving.lock().expect("serving").drain() {
            cancelled.store(true, Ordering::Relaxed);
        }
    }
}

fn handle(shared: &Arc<Shared>, frame: Frame) {
    match frame {
        Frame::Reply(Reply { id, outcome }) => {
            if let Some(waiting) = shared.pending.lock().expect("pending").remove(&id) {
                let _ = waiting.send(outcome);
            }
        }
        Frame::Call(call) => serve_callback(shared, call),
        Frame::Cancel(id) => {
            if let Some(cancelled) = shared.serving.lock().expect("serving").remove(&id) {
                cancelled.store(true, Ordering::Relaxed);
            }
        }
        // A client asks no credential of the server that calls it back.
        Frame::Auth(_) => {}
    }
}

/// The server called an exported object: run it on a blocking thread (methods may block) and
/// send the outcome back.
fn serve_callback(shared: &Arc<Shared>, call: Call) {
    let object = shared.exports.lock().expect("exports").get(&call.object).cloned();
    let cancelled = Arc::new(AtomicBool::new(false));
    shared.serving.lock().expect("serving").insert(call.id, cancelled.clone());
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = (call.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(call.timeout_ms.into()));
        let ctx = Context::new(deadline, cancelled);
        let outcome = invoke(object.as_deref(), &ctx, &call);
        let still_wanted = shared.serving.lock().expect("serving").remove(&call.id).is_some();
        let mut bytes = Vec::new();
        if still_wanted && wire::encode(&Frame::Reply(Reply { id: call.id, outcome }), &mut bytes).is_ok() {
            let _ = shared.outbox.blocking_send(bytes);
        }
    });
}

/// Run `call` on `object` (if there is one) as a server does: check the interface and version,
/// then dispatch; a method that returns after the call's deadline answers `DeadlineExceeded`.
pub fn invoke(object: Option<&dyn Dispatch>, ctx: &Context, call: &Call) -> Outcome {
    let Some(object) = object else {
        return Outcome::Err(RpcError::new(Code::NoSuchObject, format!("no object {:?} here", call.object)));
    };
    let interface = object.interface();
    let version = if call.interface.is_empty() { interface.version } else { call.version };
    let admitted = if call.interface.is_empty() { Ok(()) } else { interface.admits(&call.interface, version) };
    if let Err(e) = admitted.and_then(|()| interface.method(&call.method, version).map(|_| ())) {
        return Outcome::Err(e);
    }
    let codec = if call.json { Codec::Json } else { Codec::Binary };
    let result = object.dispatch(ctx, &call.method, codec, &call.args);
    if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
        // The caller has stopped waiting: whatever the method made of it, it was too late.
        return Outcome::Err(RpcError::new(Code::DeadlineExceeded, "the deadline passed while the method ran"));
    }
    match result {
        Ok(bytes) => Outcome::Ok(bytes),
        Err(Failure::App(bytes)) => Outcome::App(bytes),
        Err(Failure::Rpc(e)) => Outcome::Err(e),
    }
}
