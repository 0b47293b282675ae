//! What the middleware tests share: an object that says which server it runs on (and can be
//! made to stall or fail), object servers that can be killed, and a registry.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use warren_rpc::{Code, Codec, Context, Dispatch, Failure, Interface, RpcError, interface};

pub const T: Duration = Duration::from_secs(10);

#[interface(name = "Replica", version = 1)]
pub trait Replica: Send + Sync + 'static {
    /// Which server answered.
    #[rpc(idempotent)]
    fn whoami(&self, ctx: &Context) -> String;
    /// Counts calls: not idempotent.
    fn bump(&self, ctx: &Context) -> u64;
}

/// One server's copy of the object, with what it saw.
#[derive(Debug, Default)]
pub struct Servant {
    pub label: String,
    /// Stall every n-th call (0: never) for `stall_for`, or until the caller cancels.
    pub stall_every: AtomicU64,
    pub stall_for: Mutex<Duration>,
    /// Fail this many next calls with `overloaded` (they never ran).
    pub refuse_next: AtomicU32,
    pub served: AtomicU64,
    pub stalled: AtomicU64,
    pub cancelled: AtomicU64,
    pub bumps: AtomicU64,
    /// Set when its server is killed: a stall in progress ends, as the process would.
    pub halted: AtomicBool,
}

impl Servant {
    pub fn new(label: &str) -> Arc<Servant> {
        Arc::new(Servant { label: label.into(), ..Servant::default() })
    }

    pub fn stall(&self, every: u64, for_: Duration) {
        *self.stall_for.lock().unwrap() = for_;
        self.stall_every.store(every, Ordering::SeqCst);
    }

    fn maybe_stall(&self, ctx: &Context) {
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.stall_every.load(Ordering::SeqCst);
        if every == 0 || !n.is_multiple_of(every) {
            return;
        }
        self.stalled.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + *self.stall_for.lock().unwrap();
        while Instant::now() < until && !self.halted.load(Ordering::SeqCst) {
            if ctx.is_cancelled() {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Replica for Arc<Servant> {
    fn whoami(&self, ctx: &Context) -> String {
        self.maybe_stall(ctx);
        self.label.clone()
    }

    fn bump(&self, ctx: &Context) -> u64 {
        self.maybe_stall(ctx);
        self.bumps.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The skeleton, refusing calls while the servant says so.
struct Refusing(Arc<Servant>, ReplicaSkeleton<Arc<Servant>>);

impl Dispatch for Refusing {
    fn interface(&self) -> &'static Interface {
        self.1.interface()
    }

    fn dispatch(&self, ctx: &Context, method: &str, codec: Codec, args: &[u8]) -> Result<Vec<u8>, Failure> {
        let refuse = self.0.refuse_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if refuse.is_ok() {
            self.0.served.fetch_add(1, Ordering::SeqCst);
            return Err(Failure::Rpc(RpcError::new(Code::Overloaded, "refused by the test")));
        }
        self.1.dispatch(ctx, method, codec, args)
    }
}

/// An object server hosting one servant as `object`, that a test can kill: like
/// `warren_rpc::testing::serve`, plus cancellation and a kill switch.
pub struct Server {
    pub addr: SocketAddr,
    pub servant: Arc<Servant>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    pub async fn start(object: &str, servant: Arc<Servant>) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), object, servant).await
    }

    /// On `addr`: a server started again where a killed one was.
    pub async fn start_on(addr: SocketAddr, object: &str, servant: Arc<Servant>) -> Server {
        let listener = TcpListener::bind(addr).await.unwrap();
        servant.halted.store(false, Ordering::SeqCst);
        let addr = listener.local_addr().unwrap();
        let dispatch: Arc<dyn Dispatch> = Arc::new(Refusing(servant.clone(), ReplicaSkeleton(servant.clone())));
        let objects = Arc::new(HashMap::from([(object.to_owned(), dispatch)]));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registered = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let connection = tokio::spawn(warren_rpc::testing::serve_connection(socket, objects.clone()));
                registered.lock().unwrap().push(connection.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Server { addr, servant, tasks }
    }

    /// Stop listening and drop every connection, as a killed process would.
    pub fn kill(&self) {
        // Its tasks first: a stall ended by `halted` must find no connection left to answer on,
        // or a call the process "died" in would still be answered.
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        self.servant.halted.store(true, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

type Objects = warren_rpc::testing::Objects;

/// Poll `done` until it holds, for at most `T`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A registry server on loopback over a fresh store, on a thread of its own (its model's
/// threads must be stopped before the test's runtime goes), stopped when dropped.
pub struct Registry {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Registry {
    pub async fn start() -> Registry {
        use warren_registry_server::{embedded::Embedded, server, state::Config};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warren-rpc-layers-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir).unwrap();
        let backend = Arc::new(Embedded::open(&dir, Config::default(), Some("admin")).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let stop_on = async move { _ = stopped.await };
            let limits = server::Limits::default();
            runtime.block_on(server::serve(backend, listener, limits, warren_models::Model::Hybrid, stop_on)).unwrap();
        });
        Registry { addr, stop: Some(stop), thread: Some(thread), dir }
    }

    pub async fn client(&self) -> warren_registry::client::Client {
        warren_registry::client::Client::connect(self.addr, T).await.unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
