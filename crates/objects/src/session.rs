//! The binary protocol's session on the spine: frames in, each call handed to its object's
//! policy and awaited as a deferred effect (a future job), replies written as calls finish, in
//! any order; an `inline` object's call runs here and is answered at once. A call's deadline is kept here too, so a late object is answered
//! `DeadlineExceeded` on time; a `Cancel` aborts the wait and tells the object through its
//! context. Calls back to objects the client exported go out on the same connection: the
//! session holds a job that waits for the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use warren_proto::{Action, ConnInfo, Deadline, Job, Level, Limits, NoHub, Nothing, Output, Service, Session, Token};
use warren_rpc::wire::{self, Call, Frame, Outcome, Reply};
use warren_rpc::{Caller, Code, Context, Failure, RawCall, RpcError};

use crate::table::Objects;

/// Limits of one connection.
#[derive(Clone, Debug)]
pub struct ObjectLimits {
    /// Calls in flight on one connection; at the limit the session reads no more (the
    /// client's window fills) until one finishes.
    pub max_in_flight: usize,
    /// The longest deadline honoured: a call asking for more gets this.
    pub max_timeout: Duration,
    /// Idle and read timeouts (a frame begun and not finished).
    pub limits: Limits,
    /// The SHA-256 of the token a caller must present (an `Auth` frame, or HTTP's
    /// `Authorization: Bearer`); `None` admits every caller.
    pub callers: Option<[u8; 32]>,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_timeout: Duration::from_secs(3600),
            limits: Limits { max_request: wire::MAX_FRAME, ..Limits::default() },
            callers: None,
        }
    }
}

/// Calls the server makes back to a client, waiting to be sent.
const BACK_QUEUE: usize = 64;

/// The object server's binary protocol.
#[derive(Clone, Debug)]
pub struct ObjectService {
    objects: Arc<Objects>,
    limits: ObjectLimits,
}

impl ObjectService {
    pub fn new(objects: Arc<Objects>, limits: ObjectLimits) -> Self {
        Self { objects, limits }
    }
}

impl Service for ObjectService {
    type Hub = NoHub;
    type Session = ObjectSession;

    fn name(&self) -> &'static str {
        "objects"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> ObjectSession {
        ObjectSession {
            objects: self.objects.clone(),
            limits: self.limits.clone(),
            input: Vec::new(),
            calls: HashMap::new(),
            by_token: HashMap::new(),
            next_token: 1,
            back: None,
            deadline: Deadline::new(&self.limits.limits, now),
            closing: false,
            admitted: self.limits.callers.is_none(),
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// What the session's jobs return.
pub enum Done {
    /// A call's outcome.
    Answer(Outcome),
    /// The next call back to the client (`None`: nobody can call back any more), and the
    /// queue to wait on again.
    Back(Option<BackCall>, mpsc::Receiver<BackCall>),
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Answer(o) => f.debug_tuple("Answer").field(o).finish(),
            Done::Back(c, _) => f.debug_tuple("Back").field(&c.as_ref().map(|(c, _)| &c.method)).finish(),
        }
    }
}

/// A call on an object the client exported, and where its answer goes.
pub type BackCall = (RawCall, oneshot::Sender<Result<Vec<u8>, Failure>>);

/// The job token of the wait for calls back; calls count up from 1.
const BACK_TOKEN: Token = Token(0);

struct InFlight {
    token: Token,
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

/// Where a call back's answer goes, and when it is due.
type Awaited = (oneshot::Sender<Result<Vec<u8>, Failure>>, Option<Instant>);

/// Calls back to the client: their queue, and those sent and not answered.
struct Back {
    /// What methods get in their `Context` to call the client's objects; made once.
    caller: Caller,
    pending: HashMap<u64, Awaited>,
    next_id: u64,
}

/// One binary connection.
pub struct ObjectSession {
    objects: Arc<Objects>,
    limits: ObjectLimits,
    input: Vec<u8>,
    /// Calls in flight by the client's id.
    calls: HashMap<u64, InFlight>,
    by_token: HashMap<Token, u64>,
    next_token: u64,
    back: Option<Back>,
    deadline: Deadline,
    /// The client half-closed: close once every call is answered.
    closing: bool,
    /// The client presented the callers' token (or none is asked).
    admitted: bool,
}

impl std::fmt::Debug for ObjectSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSession").field("in_flight", &self.calls.len()).finish()
    }
}

type Out = Output<Nothing, Done>;

fn send(out: &mut Out, frame: &Frame) {
    let mut bytes = Vec::new();
    match wire::encode(frame, &mut bytes) {
        Ok(()) => out.send(&bytes),
        Err(e) => {
            // Only a reply can be too large: answer that instead.
            if let Frame::Reply(Reply { id, .. }) = frame {
                let error = RpcError::new(Code::Internal, format!("the answer is too large: {e}"));
                send(out, &Frame::Reply(Reply { id: *id, outcome: Outcome::Err(error) }));
            }
        }
    }
}

fn reply(out: &mut Out, id: u64, outcome: Outcome) {
    send(out, &Frame::Reply(Reply { id, outcome }));
}

impl ObjectSession {
    fn start_call(&mut self, now: Instant, call: Call, out: &mut Out) {
        let id = call.id;
        if !self.admitted {
            let e = RpcError::new(Code::Unauthenticated, "this server admits callers with its token (an Auth frame)");
            return reply(out, id, Outcome::Err(e));
        }
        if self.calls.contains_key(&id) {
            let e = RpcError::new(Code::Protocol, format!("call id {id} is already in flight"));
            return reply(out, id, Outcome::Err(e));
        }
        let Some(object) = self.objects.get(&call.object) else {
            let e = RpcError::new(Code::NoSuchObject, format!("no object named {:?}", call.object));
            return reply(out, id, Outcome::Err(e));
        };
        let deadline = (call.timeout_ms > 0)
            .then(|| now + Duration::from_millis(call.timeout_ms.into()).min(self.limits.max_timeout));
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut ctx = Context::new(deadline, cancelled.clone()).with_exporter(self.objects.clone());
        let inline = object.runs_inline();
        // An inline call runs on this thread, the one that would send its calls back: it gets
        // no caller, and a call back fails with the reason instead of waiting for ever.
        if !inline {
            ctx = ctx.with_callbacks(self.back_caller(out));
        }
        let (answer, mut answered) = oneshot::channel();
        if let Err(e) = object.submit(ctx, call, answer) {
            return reply(out, id, Outcome::Err(e));
        }
        if inline {
            // Answered already: no job, no thread woken.
            let outcome = answered
                .try_recv()
                .unwrap_or_else(|_| Outcome::Err(RpcError::new(Code::Internal, "the object dropped the call")));
            return reply(out, id, outcome);
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        out.job(
            token,
            Job::future(async move {
                Done::Answer(
                    answered
                        .await
                        .unwrap_or_else(|_| Outcome::Err(RpcError::new(Code::Internal, "the object dropped the call"))),
                )
            }),
        );
        self.calls.insert(id, InFlight { token, cancelled, deadline });
        self.by_token.insert(token, id);
    }

    /// A caller for objects the client exported; the first one starts the wait for them.
    fn back_caller(&mut self, out: &mut Out) -> Caller {
        let back = self.back.get_or_insert_with(|| {
            let (sender, queue) = mpsc::channel(BACK_QUEUE);
            out.job(BACK_TOKEN, wait_for_back(queue));
            Back { caller: Caller::new(BackCaller { sender }), pending: HashMap::new(), next_id: 1 }
        });
        back.caller.clone()
    }

    fn cancel(&mut self, id: u64, out: &mut Out) {
        if let Some(call) = self.calls.remove(&id) {
            call.cancelled.store(true, Ordering::Relaxed);
            self.by_token.remove(&call.token);
            out.act(Action::Abort(call.token));
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame, out: &mut Out) {
        match frame {
            Frame::Call(call) => self.start_call(now, call, out),
            Frame::Cancel(id) => self.cancel(id, out),
            Frame::Auth(token) => {
                self.admitted = self.limits.callers.is_none_or(|want| want == crate::admin::hash(&token));
            }
            Frame::Reply(Reply { id, outcome }) => {
                let waiting = self.back.as_mut().and_then(|b| b.pending.remove(&id));
                if let Some((answer, _)) = waiting {
                    let _ = answer.send(match outcome {
                        Outcome::Ok(bytes) => Ok(bytes),
                        Outcome::App(bytes) => Err(Failure::App(bytes)),
                        Outcome::Err(e) => Err(Failure::Rpc(e)),
                    });
                }
            }
        }
    }

    /// Handle the whole frames read so far, but start no call beyond `max_in_flight`: one read
    /// may bring many calls, and those past the limit stay in the buffer, unread as the rest
    /// of the socket, until a call in flight finishes (then [`Self::take_frames`] runs again).
    /// Cancels and replies ahead of the first such call are still handled. Whether a frame is
    /// begun and not finished.
    fn take_frames(&mut self, now: Instant, out: &mut Out) -> bool {
        let mut used = 0;
        let partial = loop {
            match wire::decode(&self.input[used..]) {
                Ok(Some((Frame::Call(_), _))) if self.calls.len() >= self.limits.max_in_flight => break false,
                Ok(Some((frame, len))) => {
                    used += len;
                    self.handle_frame(now, frame, out);
                }
                Ok(None) => break used < self.input.len(),
                Err(e) => {
                    out.log(Level::Debug, format!("objects: closing a connection: {e}"));
                    self.input.clear();
                    out.close();
                    return false;
                }
            }
        };
        self.input.drain(..used);
        partial
    }

    fn close_if_done(&self, out: &mut Out) {
        if self.closing && self.calls.is_empty() {
            out.close();
        }
    }

    fn cancel_everything(&mut self) {
        for (_, call) in self.calls.drain() {
            call.cancelled.store(true, Ordering::Relaxed);
        }
        self.by_token.clear();
        if let Some(back) = &mut self.back {
            for (_, (answer, _)) in back.pending.drain() {
                let _ = answer.send(Err(Failure::Rpc(RpcError::new(Code::Unavailable, "the client went away"))));
            }
        }
    }
}

fn wait_for_back(mut queue: mpsc::Receiver<BackCall>) -> Job<Done> {
    Job::future(async move {
        let next = queue.recv().await;
        Done::Back(next, queue)
    })
}

impl Drop for ObjectSession {
    /// The connection is gone: objects still working for it hear that their callers left.
    fn drop(&mut self) {
        self.cancel_everything();
    }
}

impl Session for ObjectSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Done;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.input.extend_from_slice(data);
        let partial = self.take_frames(now, out);
        // Only a frame begun and not finished runs the read timeout, not calls held back.
        self.deadline.input(now, partial);
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        self.closing = true;
        self.close_if_done(out);
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_completion(&mut self, now: Instant, token: Token, done: Done, out: &mut Out) {
        match done {
            Done::Answer(outcome) => {
                if let Some(id) = self.by_token.remove(&token) {
                    self.calls.remove(&id);
                    reply(out, id, outcome);
                }
                self.deadline.touch(now);
                // A place in flight is free: a call held back may start.
                let _ = self.take_frames(now, out);
                self.close_if_done(out);
            }
            Done::Back(None, _) => self.back = None,
            Done::Back(Some((call, answer)), queue) => {
                out.job(BACK_TOKEN, wait_for_back(queue));
                let Some(back) = self.back.as_mut() else { return };
                let id = back.next_id;
                back.next_id += 1;
                back.pending.insert(id, (answer, call.timeout.map(|t| now + t)));
                send(out, &Frame::Call(call.into_frame(id)));
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        let late: Vec<u64> =
            self.calls.iter().filter(|(_, c)| c.deadline.is_some_and(|d| d <= now)).map(|(id, _)| *id).collect();
        let freed = !late.is_empty();
        for id in late {
            self.cancel(id, out);
            let e = RpcError::new(Code::DeadlineExceeded, "the object did not answer before the deadline");
            reply(out, id, Outcome::Err(e));
        }
        if freed && !out.is_closed() {
            let _ = self.take_frames(now, out);
        }
        if let Some(back) = &mut self.back {
            let late: Vec<u64> =
                back.pending.iter().filter(|(_, (_, d))| d.is_some_and(|d| d <= now)).map(|(id, _)| *id).collect();
            for id in late {
                if let Some((answer, _)) = back.pending.remove(&id) {
                    let e = RpcError::new(Code::DeadlineExceeded, "the client did not answer the call back in time");
                    let _ = answer.send(Err(Failure::Rpc(e)));
                    send(out, &Frame::Cancel(id));
                }
            }
        }
        if self.calls.is_empty() && self.deadline.expired(now).is_some() {
            out.close();
        }
        self.close_if_done(out);
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        self.cancel_everything();
        out.close();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().filter_map(|c| c.deadline);
        let back = self.back.iter().flat_map(|b| b.pending.values().filter_map(|(_, d)| *d));
        // The idle timeout runs only while no call is in flight.
        let idle = self.calls.is_empty().then(|| self.deadline.at());
        calls.chain(back).chain(idle).min()
    }

    fn wants_input(&self) -> bool {
        self.calls.len() < self.limits.max_in_flight && !self.closing
    }
}

/// Sends calls on the client's exported objects through the session that serves the client.
#[derive(Clone)]
struct BackCaller {
    sender: mpsc::Sender<BackCall>,
}

impl tower::Service<RawCall> for BackCaller {
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = warren_rpc::client::CallFuture;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        let sender = self.sender.clone();
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            match sender.try_send((call, answer)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(Failure::Rpc(RpcError::new(Code::Overloaded, "too many calls back to this client")));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(Failure::Rpc(RpcError::new(Code::Unavailable, "the client went away")));
                }
            }
            answered
                .await
                .unwrap_or_else(|_| Err(Failure::Rpc(RpcError::new(Code::Unavailable, "the client went away"))))
        })
    }
}
