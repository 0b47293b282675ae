//! Driver tests, shared with `pool`: real sockets on 127.0.0.1, the server on its own thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown as Half, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use warren_proto::chat::{self, Chat};
use warren_proto::echo::Echo;
use warren_proto::timeserver::TimeServer;
use warren_proto::{ConnInfo, Limits, NoHub, Nothing, Output, Service, Session};

use crate::run::{Model, ServeConfig, ServeReport, serve_until};
use crate::shutdown::Shutdown;

/// Bounds every client read, so that a broken driver fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct Server {
    pub addr: SocketAddr,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<std::io::Result<ServeReport>>>,
}

impl Server {
    pub(crate) fn start<S: Service>(model: Model, service: S, config: ServeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let trigger = shutdown.clone();
        let thread = std::thread::spawn(move || serve_until(model, service, listener, &config, trigger));
        Self { addr, shutdown, thread: Some(thread) }
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Wait for `serve` to return, after triggering shutdown.
    pub(crate) fn stop(mut self) -> ServeReport {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub(crate) fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

pub(crate) fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    all
}

pub(crate) fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while line.last() != Some(&b'\n') {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "EOF inside a line");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Eight clients, all connected at once, each with its own conversation.
pub(crate) fn check_echo_round_trips(model: Model, config: ServeConfig) {
    const CLIENTS: usize = 8;
    let server = Server::start(model, Echo::default(), config);
    let all_open = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (mut stream, all_open) = (server.connect(), all_open.clone());
            std::thread::spawn(move || {
                round_trip(&mut stream, b"hello\n");
                all_open.wait();
                for j in 0..50 {
                    round_trip(&mut stream, format!("client {i} message {j}\n").as_bytes());
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert_eq!(server.stop().accepted, CLIENTS as u64);
}

/// Far more than the socket buffers hold, sent while reading back.
pub(crate) fn check_large_echo(model: Model, config: ServeConfig) {
    let server = Server::start(model, Echo::default(), config);
    let mut stream = server.connect();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let (mut writer, sent) = (stream.try_clone().unwrap(), data.clone());
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Half::Write).unwrap();
    });
    let back = read_to_eof(&mut stream);
    writing.join().unwrap();
    assert!(back == data, "echoed {} of {} bytes, or changed them", back.len(), data.len());
    server.stop();
}

/// A client that sends without reading is stopped by the server, not buffered without bound.
pub(crate) fn check_backpressure(model: Model, config: ServeConfig) {
    const BOUND: usize = 64 << 20;
    let server = Server::start(model, Echo::default(), config);
    let mut stream = server.connect();
    stream.set_nonblocking(true).unwrap();
    let chunk = [7; 64 * 1024];
    let mut sent = 0;
    while sent < BOUND {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Stuck for a whole second: the server has stopped reading.
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::from(1000u16)).unwrap() == 0 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < BOUND, "the server kept reading a client that does not read");
    stream.set_nonblocking(false).unwrap();
    let mut back = vec![0; sent];
    stream.read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 7));
    drop(stream);
    server.stop();
}

pub(crate) fn check_half_close(model: Model, config: ServeConfig) {
    let server = Server::start(model, Echo::default(), config);
    let mut stream = server.connect();
    stream.write_all(b"last words").unwrap();
    stream.shutdown(Half::Write).unwrap();
    assert_eq!(read_to_eof(&mut stream), b"last words");
    server.stop();
}

/// Echoes, and answers "bye" a while after the peer half-closes: a session that outlives its
/// input. Counts how often drivers ask for its deadline, which a spinning driver does endlessly.
struct Drawl {
    asked: Arc<AtomicUsize>,
}

struct DrawlSession {
    asked: Arc<AtomicUsize>,
    bye_at: Option<Instant>,
}

impl Service for Drawl {
    type Hub = NoHub;
    type Session = DrawlSession;

    fn name(&self) -> &'static str {
        "drawl"
    }

    fn new_session(&self, _: &ConnInfo, _: Instant) -> DrawlSession {
        DrawlSession { asked: self.asked.clone(), bye_at: None }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

impl Session for DrawlSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Output<Nothing>) {}

    fn handle_input(&mut self, _: Instant, data: &[u8], out: &mut Output<Nothing>) {
        out.send(data);
    }

    fn handle_read_closed(&mut self, now: Instant, _: &mut Output<Nothing>) {
        self.bye_at = Some(now + Duration::from_millis(200));
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing>) {
        if self.bye_at.is_some_and(|at| now >= at) {
            out.send(b"bye\n");
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.bye_at
    }
}

/// After EOF the socket stays readable for good: a driver must not keep waking for it.
pub(crate) fn check_quiet_after_eof(model: Model, config: ServeConfig) {
    let asked = Arc::new(AtomicUsize::new(0));
    let server = Server::start(model, Drawl { asked: asked.clone() }, config);
    let mut stream = server.connect();
    round_trip(&mut stream, b"hi");
    stream.shutdown(Half::Write).unwrap();
    assert_eq!(read_to_eof(&mut stream), b"bye\n");
    let asked = asked.load(Ordering::Relaxed);
    assert!(asked < 100, "the driver looked at a quiet connection {asked} times: it spins");
    server.stop();
}

pub(crate) fn check_idle_timeout(model: Model, config: ServeConfig) {
    let idle = Duration::from_millis(200);
    let server = Server::start(model, Echo { limits: Limits { idle_timeout: idle, ..Limits::default() } }, config);
    let mut stream = server.connect();
    let sent = Instant::now();
    round_trip(&mut stream, b"x");
    assert_eq!(read_to_eof(&mut stream), b"");
    assert!(sent.elapsed() >= idle, "closed for idleness, not before");
    drop(stream);
    server.stop();
}

pub(crate) fn check_shutdown(model: Model, config: ServeConfig) {
    let server = Server::start(model, Echo::default(), config);
    let mut streams: Vec<_> = (0..5).map(|_| server.connect()).collect();
    streams.iter_mut().for_each(|s| round_trip(s, b"ping"));
    let addr = server.addr;
    server.shutdown.trigger();
    for mut stream in streams {
        assert_eq!(read_to_eof(&mut stream), b"", "every connection is closed");
    }
    assert_eq!(server.stop().accepted, 5);
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

/// Read lines until one contains `text`; fail after a few dozen.
fn read_until(stream: &mut TcpStream, text: &str) -> String {
    (0..50).map(|_| read_line(stream)).find(|line| line.contains(text)).expect("the line never came")
}

/// A message crosses connections through the hub and the mailboxes; the full server refuses
/// with the protocol's line.
pub(crate) fn check_chat(model: Model, config: ServeConfig) {
    let server = Server::start(model, Chat::default(), ServeConfig { max_conns: 2, ..config });
    let (mut ann, mut bob) = (server.connect(), server.connect());
    for (stream, nick) in [(&mut ann, "ann"), (&mut bob, "bob")] {
        stream.write_all(format!("/join #a\n/nick {nick}\n").as_bytes()).unwrap();
        // The first line naming the new nick answers the command after the join.
        read_until(stream, nick);
    }
    ann.write_all(b"hello all\n").unwrap();
    read_until(&mut bob, "hello all");
    assert_eq!(read_to_eof(&mut server.connect()), chat::REFUSAL);
    drop((ann, bob));
    server.stop();
}

pub(crate) fn check_max_conns(model: Model, config: ServeConfig) {
    let server = Server::start(model, Echo::default(), ServeConfig { max_conns: 2, ..config });
    let mut kept: Vec<_> = (0..2).map(|_| server.connect()).collect();
    kept.iter_mut().for_each(|s| round_trip(s, b"in"));
    assert_eq!(read_to_eof(&mut server.connect()), b"", "the third is closed without a byte");
    kept.iter_mut().for_each(|s| round_trip(s, b"still served"));
    drop(kept);
    let report = server.stop();
    assert_eq!((report.accepted, report.refused), (2, 1));
}

fn config(helpers: usize) -> ServeConfig {
    ServeConfig { helpers, ..ServeConfig::for_model(Model::Event) }
}

#[test]
fn echo_round_trips() {
    check_echo_round_trips(Model::Event, config(0));
}

#[test]
fn large_echo_under_backpressure() {
    check_large_echo(Model::Event, config(0));
}

#[test]
fn a_client_that_does_not_read_is_stopped() {
    check_backpressure(Model::Event, config(0));
}

#[test]
fn half_close_delivers_the_echo_then_eof() {
    check_half_close(Model::Event, config(0));
}

#[test]
fn quiet_after_eof() {
    check_quiet_after_eof(Model::Event, config(0));
}

#[test]
fn idle_connection_is_closed() {
    check_idle_timeout(Model::Event, config(0));
}

#[test]
fn shutdown_closes_every_connection() {
    check_shutdown(Model::Event, config(2));
}

#[test]
fn chat_between_connections() {
    check_chat(Model::Event, config(0));
}

#[test]
fn refuses_beyond_max_conns() {
    check_max_conns(Model::Event, config(0));
}

#[test]
fn a_blocking_call_on_the_loop_stalls_every_connection() {
    let block = Duration::from_millis(300);
    let server = Server::start(Model::Event, TimeServer { delay: block, ..TimeServer::default() }, config(0));
    let start = Instant::now();
    let mut first = server.connect();
    read_line(&mut first);
    let mut second = server.connect();
    read_line(&mut second);
    assert!(start.elapsed() >= block, "the second answer waited for the first client's blocking call");
    assert_eq!(read_to_eof(&mut first), b"");
    drop((first, second));
    server.stop();
}

#[test]
fn helper_threads_take_blocking_calls_off_the_loop() {
    let block = Duration::from_secs(2);
    let server = Server::start(Model::Event, TimeServer { delay: block, ..TimeServer::default() }, config(2));
    let start = Instant::now();
    let mut first = server.connect();
    read_line(&mut first);
    let mut second = server.connect();
    read_line(&mut second);
    assert!(start.elapsed() < block, "the second answer did not wait for the first blocking call");
    assert_eq!(read_to_eof(&mut first), b"");
    assert!(start.elapsed() >= block, "the first connection waited for its call to end");
    drop((first, second));
    server.stop();
}
