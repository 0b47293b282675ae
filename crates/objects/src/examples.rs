//! The course's remote objects, as classes any server can host:
//!
//! - `hello`: `HelloServer`'s `sayHello()` → `"Hello World!"` (RMI ex1);
//! - `nifty`: `NiftyObjectServer` (ex3): `getDate()`, `execute(WorkRequest)` (the course's
//!   `MyCalculation` squares, or a sleep), and `getList()`, which returns a new remote object,
//!   a `StringEnumerator` over "Goo", "Goo", "Gaa", "Gaa";
//! - `async`: `AsyncServer` (ex4): `asyncExecute(WorkRequest, WorkListener)` answers at once
//!   and calls the client's listener back when the work is done;
//! - `threads`: `RMIThreadServer`: `whichThread(ms)` names the thread that served the call,
//!   `update()` adds then removes 900,000 one at a time without a lock, `read()` shows the sum:
//!   always 0 when calls are serialized (`per-object`), often not under `pool` or
//!   `per-invocation` (the thread-safety exercise, ex6);
//! - `counter`: a persistent counter, `add(n)` and `get()`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use warren_rpc::{Context, ObjectRef, block_on, interface};

use crate::class::{Class, Classes, Incarnation};

#[interface(name = "Hello", version = 1)]
pub trait Hello: Send + Sync + 'static {
    #[rpc(name = "sayHello", idempotent)]
    fn say_hello(&self) -> String;
}

/// Work shipped to the server (the course ships code in the object; here the kinds of work are
/// the server's: shipping code is what agents do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkRequest {
    /// `MyCalculation(n)`: the squares of 0..n.
    Squares { n: u32 },
    /// Sleep, stopping early if the caller gives up.
    Sleep { ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkResult {
    Squares(Vec<i64>),
    Slept { ms: u64, cancelled: bool },
}

/// The largest `Squares` request.
pub const MAX_SQUARES: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkError {
    TooLarge { max: u32 },
}

fn work(ctx: Option<&Context>, request: &WorkRequest) -> Result<WorkResult, WorkError> {
    match *request {
        WorkRequest::Squares { n } if n > MAX_SQUARES => Err(WorkError::TooLarge { max: MAX_SQUARES }),
        WorkRequest::Squares { n } => Ok(WorkResult::Squares((0..i64::from(n)).map(|i| i * i).collect())),
        WorkRequest::Sleep { ms } => {
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            while std::time::Instant::now() < until {
                if ctx.is_some_and(Context::is_cancelled) {
                    return Ok(WorkResult::Slept { ms, cancelled: true });
                }
                std::thread::sleep(Duration::from_millis(1).min(until - std::time::Instant::now()));
            }
            Ok(WorkResult::Slept { ms, cancelled: false })
        }
    }
}

#[interface(name = "ObjectServer", version = 1)]
pub trait ObjectServer: Send + Sync + 'static {
    /// The server's time, RFC 3339.
    #[rpc(name = "getDate", idempotent)]
    fn get_date(&self) -> String;
    #[rpc(name = "execute")]
    fn execute(&self, ctx: &Context, request: WorkRequest) -> Result<WorkResult, WorkError>;
    /// A new enumerator, as a remote reference.
    #[rpc(name = "getList")]
    fn get_list(&self, ctx: &Context) -> Result<ObjectRef, String>;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoMoreItems;

#[interface(name = "StringEnumerator", version = 1)]
pub trait StringEnumerator: Send + Sync + 'static {
    #[rpc(name = "hasMoreItems", idempotent)]
    fn has_more_items(&self) -> bool;
    #[rpc(name = "nextItem")]
    fn next_item(&self) -> Result<String, NoMoreItems>;
}

#[interface(name = "WorkListener", version = 1)]
pub trait WorkListener: Send + Sync + 'static {
    #[rpc(name = "workCompleted")]
    fn work_completed(&self, request: WorkRequest, result: Result<WorkResult, WorkError>);
}

#[interface(name = "AsyncServer", version = 1)]
pub trait AsyncServer: Send + Sync + 'static {
    /// Answers at once; `listener` (an object the caller exported) hears the result later.
    #[rpc(name = "asyncExecute")]
    fn async_execute(&self, ctx: &Context, request: WorkRequest, listener: ObjectRef) -> Result<(), String>;
}

/// Which thread served a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub name: String,
    pub id: String,
}

#[interface(name = "ThreadServer", version = 1)]
pub trait ThreadServer: Send + Sync + 'static {
    /// Wait `ms`, then name the thread that served the call.
    #[rpc(name = "whichThread", idempotent)]
    fn which_thread(&self, ctx: &Context, ms: u64) -> ThreadInfo;
    #[rpc(name = "update")]
    fn update(&self);
    #[rpc(name = "read", idempotent)]
    fn read(&self) -> i64;
}

#[interface(name = "Counter", version = 1)]
pub trait Counter: Send + Sync + 'static {
    /// Add `n`; the new value.
    fn add(&self, n: i64) -> i64;
    #[rpc(idempotent)]
    fn get(&self) -> i64;
}

struct World;

impl Hello for World {
    fn say_hello(&self) -> String {
        "Hello World!".to_owned()
    }
}

struct Nifty;

impl ObjectServer for Nifty {
    fn get_date(&self) -> String {
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
    }

    fn execute(&self, ctx: &Context, request: WorkRequest) -> Result<WorkResult, WorkError> {
        work(Some(ctx), &request)
    }

    fn get_list(&self, ctx: &Context) -> Result<ObjectRef, String> {
        let items = ["Goo", "Goo", "Gaa", "Gaa"].map(str::to_owned).into();
        ctx.export(std::sync::Arc::new(StringEnumeratorSkeleton(Enumerator(Mutex::new(items)))))
            .map_err(|e| e.to_string())
    }
}

struct Enumerator(Mutex<std::collections::VecDeque<String>>);

impl StringEnumerator for Enumerator {
    fn has_more_items(&self) -> bool {
        !self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    fn next_item(&self) -> Result<String, NoMoreItems> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front().ok_or(NoMoreItems)
    }
}

struct Async;

impl AsyncServer for Async {
    fn async_execute(&self, ctx: &Context, request: WorkRequest, listener: ObjectRef) -> Result<(), String> {
        let target = ctx.callback(&listener).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("async-work".into())
            .spawn(move || {
                let result = work(None, &request);
                let listener = WorkListenerClient::new(target.with_timeout(Duration::from_secs(30)));
                if let Err(e) = block_on(listener.work_completed(request, result)) {
                    tracing::debug!(target: "warren", "objects: a listener did not hear its result: {e}");
                }
            })
            .map(drop)
            .map_err(|e| format!("no thread for the work: {e}"))
    }
}

#[derive(Default)]
struct Threads {
    sum: AtomicI64,
}

impl ThreadServer for Threads {
    fn which_thread(&self, ctx: &Context, ms: u64) -> ThreadInfo {
        let _ = work(Some(ctx), &WorkRequest::Sleep { ms });
        let thread = std::thread::current();
        ThreadInfo { name: thread.name().unwrap_or("unnamed").to_owned(), id: format!("{:?}", thread.id()) }
    }

    fn update(&self) {
        // A read, then a write: not one atomic step, so concurrent updates lose some.
        for step in [1, -1] {
            for _ in 0..900_000 {
                let seen = self.sum.load(Ordering::Relaxed);
                self.sum.store(seen + step, Ordering::Relaxed);
            }
        }
    }

    fn read(&self) -> i64 {
        self.sum.load(Ordering::Relaxed)
    }
}

struct Count(Mutex<i64>);

impl Counter for Count {
    fn add(&self, n: i64) -> i64 {
        let mut value = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *value = value.saturating_add(n);
        *value
    }

    fn get(&self) -> i64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A class made of a name, a line about it, an interface and a function.
struct Simple {
    name: &'static str,
    about: &'static str,
    interface: &'static warren_rpc::Interface,
    make: fn(Option<&[u8]>) -> Result<Incarnation, String>,
}

impl Class for Simple {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn interface(&self) -> &'static warren_rpc::Interface {
        self.interface
    }

    fn incarnate(&self, state: Option<&[u8]>) -> Result<Incarnation, String> {
        (self.make)(state)
    }
}

fn counter(state: Option<&[u8]>) -> Result<Incarnation, String> {
    let value = match state {
        None => 0,
        Some(bytes) => i64::from_le_bytes(bytes.try_into().map_err(|_| "a counter's state is 8 bytes".to_owned())?),
    };
    let servant = std::sync::Arc::new(CounterSkeleton(Count(Mutex::new(value))));
    let seen = servant.clone();
    Ok(Incarnation { object: servant, snapshot: Some(Box::new(move || seen.0.get().to_le_bytes().to_vec())) })
}

/// The course's classes.
pub fn classes() -> Classes {
    Classes::default()
        .with(Simple {
            name: "hello",
            about: "HelloServer: sayHello() answers \"Hello World!\"",
            interface: &HELLO,
            make: |_| Ok(Incarnation::stateless(HelloSkeleton(World))),
        })
        .with(Simple {
            name: "nifty",
            about: "NiftyObjectServer: getDate(), execute(WorkRequest), getList() returns a remote StringEnumerator",
            interface: &OBJECT_SERVER,
            make: |_| Ok(Incarnation::stateless(ObjectServerSkeleton(Nifty))),
        })
        .with(Simple {
            name: "async",
            about: "AsyncServer: asyncExecute(WorkRequest, WorkListener) calls the client's listener back",
            interface: &ASYNC_SERVER,
            make: |_| Ok(Incarnation::stateless(AsyncServerSkeleton(Async))),
        })
        .with(Simple {
            name: "threads",
            about: "RMIThreadServer: whichThread(ms), update(), read(): how the policy dispatches calls",
            interface: &THREAD_SERVER,
            make: |_| Ok(Incarnation::stateless(ThreadServerSkeleton(Threads::default()))),
        })
        .with(Simple {
            name: "counter",
            about: "a counter: add(n), get(); persistent objects keep their value",
            interface: &COUNTER,
            make: counter,
        })
}
