//! A slow disk stalls only the connections that wait for it: under the models that run jobs on
//! helper threads, an upload whose `fsync` hangs, and a lease journal whose append hangs, leave
//! every other connection answered meanwhile.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warren_fileserver::journal::{Journal, Record};
use warren_fileserver::store::{Body, Sink, Store, StoreError};
use warren_fileserver::wire::{Entry, Meta, Right};
use warren_fileserver::{Access, Connection, FileLimits, FilePath, FileService, LeaseHub, MemStore, Reply, Request};
use warren_models::{Model, ServeConfig, ServeReport, Shutdown, serve_until};

/// Bounds every client read and every wait at a gate, so that a stalled server fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// The models that run jobs away from the connections' threads.
const MODELS: [Model; 3] = [Model::Event, Model::Green, Model::Hybrid];

/// A gate a slow call waits at: it says when it is there, then waits to be let through.
#[derive(Clone)]
struct Gate {
    arrived: Sender<()>,
    open: Arc<Mutex<Receiver<()>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Gate {
    /// The gate, what tells that a call arrived at it, and what opens it.
    fn new() -> (Self, Receiver<()>, Sender<()>) {
        let (arrived, at_gate) = channel();
        let (opener, open) = channel();
        (Self { arrived, open: Arc::new(Mutex::new(open)) }, at_gate, opener)
    }

    /// Wait to be let through; longer than a client waits for an answer, so that a server
    /// stalled by this call fails the test rather than answering late.
    fn pass(&self) {
        let _ = self.arrived.send(());
        let _ = self.open.lock().unwrap().recv_timeout(3 * PATIENCE);
    }
}

/// The in-memory store, whose sync of an upload to `/slow` waits at the gate.
#[derive(Debug)]
struct SlowSync {
    inner: MemStore,
    gate: Gate,
}

impl Store for SlowSync {
    fn stat(&self, path: &FilePath) -> Result<Meta, StoreError> {
        self.inner.stat(path)
    }
    fn list(&self, path: &FilePath, after: &str, max: usize) -> Result<(Vec<Entry>, bool), StoreError> {
        self.inner.list(path, after, max)
    }
    fn open(&self, path: &FilePath) -> Result<Body, StoreError> {
        self.inner.open(path)
    }
    fn create(&self, path: &FilePath, id: u64) -> Result<Box<dyn Sink>, StoreError> {
        let sink = self.inner.create(path, id)?;
        let gate = (path.to_string() == "/slow").then(|| self.gate.clone());
        Ok(Box::new(GatedSink { sink, gate }))
    }
    fn delete(&self, path: &FilePath) -> Result<(), StoreError> {
        self.inner.delete(path)
    }
}

struct GatedSink {
    sink: Box<dyn Sink>,
    gate: Option<Gate>,
}

impl Sink for GatedSink {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.sink.write(data)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(gate) = &self.gate {
            gate.pass();
        }
        self.sink.sync()
    }
    fn commit(self: Box<Self>) -> Result<Meta, StoreError> {
        self.sink.commit()
    }
    fn abort(self: Box<Self>) {
        self.sink.abort()
    }
}

/// A journal in memory whose appends wait at the gate while one is armed.
struct SlowJournal {
    records: Vec<Record>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl Journal for SlowJournal {
    fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.pass();
        }
        self.records.extend_from_slice(records);
        Ok(())
    }
    fn rewrite(&mut self, records: &[Record]) -> std::io::Result<()> {
        self.records = records.to_vec();
        Ok(())
    }
}

fn hub(gate: Arc<Mutex<Option<Gate>>>) -> LeaseHub {
    let journal = Box::new(SlowJournal { records: Vec::new(), gate });
    LeaseHub::new(journal, Vec::new(), Duration::from_secs(30), (Instant::now(), 1_700_000_000_000))
}

struct Server {
    addr: SocketAddr,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<std::io::Result<ServeReport>>>,
}

impl Server {
    fn start(model: Model, service: FileService) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let stop = shutdown.clone();
        let config = ServeConfig::for_model(model);
        let thread = std::thread::spawn(move || serve_until(model, service, listener, &config, stop));
        Self { addr, shutdown, thread: Some(thread) }
    }

    fn connect(&self) -> Connection {
        Connection::connect(self.addr, PATIENCE).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Send an upload of `data` to `path` once it is ready, without waiting for its answer.
fn send_put(conn: &mut Connection, path: &str, data: &[u8]) {
    conn.send(&Request::Put { size: data.len() as u64, path: path.into() }).unwrap();
    assert!(matches!(conn.reply().unwrap(), Reply::Ready { .. }));
    std::io::Write::write_all(&mut conn.stream(), data).unwrap();
}

/// Anyone may write: the test is about the disk.
fn service(store: Arc<dyn Store>, hub: LeaseHub) -> FileService {
    FileService::new(store, hub, FileLimits::default(), Access::new(Right::Write, [0; 32]))
}

#[test]
fn an_fsync_that_hangs_stalls_only_its_own_upload() {
    for model in MODELS {
        let (gate, at_gate, opener) = Gate::new();
        let store = Arc::new(SlowSync { inner: MemStore::default(), gate });
        let server = Server::start(model, service(store, hub(Arc::default())));
        let mut other = server.connect();
        send_put(&mut other, "/fast", b"quick");
        assert!(matches!(other.reply().unwrap(), Reply::Done { .. }), "{model}");

        let mut stalled = server.connect();
        send_put(&mut stalled, "/slow", b"stuck in fsync");
        at_gate.recv_timeout(PATIENCE).expect("the upload reaches its fsync");
        // Its sync hangs; every other connection is answered meanwhile, new ones too.
        for conn in [&mut other, &mut server.connect()] {
            conn.send(&Request::Stat { path: "/fast".into() }).unwrap();
            assert!(matches!(conn.reply().unwrap(), Reply::Stat(m) if m.size == 5), "{model}");
            conn.send(&Request::Get { path: "/fast".into(), have: 0 }).unwrap();
            assert!(matches!(conn.reply().unwrap(), Reply::File { size: 5, .. }), "{model}");
        }
        opener.send(()).unwrap();
        assert!(matches!(stalled.reply().unwrap(), Reply::Done { .. }), "{model}: the upload finishes");
    }
}

#[test]
fn a_journal_append_that_hangs_stalls_only_who_waits_for_a_lease() {
    for model in MODELS {
        let (gate, at_gate, opener) = Gate::new();
        let armed = Arc::new(Mutex::new(None));
        let store = Arc::new(MemStore::default());
        let server = Server::start(model, service(store, hub(armed.clone())));
        let mut other = server.connect();
        send_put(&mut other, "/f", b"data");
        assert!(matches!(other.reply().unwrap(), Reply::Done { .. }), "{model}");

        *armed.lock().unwrap() = Some(gate);
        let mut leasing = server.connect();
        leasing.send(&Request::Hello { client: 0, key: [0; 16] }).unwrap();
        assert!(matches!(leasing.reply().unwrap(), Reply::Welcome { .. }), "{model}");
        leasing.send(&Request::Get { path: "/f".into(), have: 0 }).unwrap();
        at_gate.recv_timeout(PATIENCE).expect("the grant reaches the journal");
        *armed.lock().unwrap() = None;
        // The hub is not held by the append: another connection reads, and even says Hello.
        other.send(&Request::Stat { path: "/f".into() }).unwrap();
        assert!(matches!(other.reply().unwrap(), Reply::Stat(_)), "{model}");
        let mut third = server.connect();
        third.send(&Request::Hello { client: 0, key: [0; 16] }).unwrap();
        assert!(matches!(third.reply().unwrap(), Reply::Welcome { .. }), "{model}");
        opener.send(()).unwrap();
        let leased = leasing.reply().unwrap();
        assert!(matches!(leased, Reply::File { size: 4, lease_ms: 30_000, .. }), "{model}: {leased:?}");
    }
}
