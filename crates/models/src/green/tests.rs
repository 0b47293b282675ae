use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use warren_proto::Limits;
use warren_proto::echo::Echo;
use warren_proto::timeserver::TimeServer;

use super::*;
use crate::run::serve_until;

/// A server running on a thread of its own, on a fresh loopback port.
struct Server {
    addr: SocketAddr,
    shutdown: Arc<Shutdown>,
    done: mpsc::Receiver<io::Result<ServeReport>>,
}

fn start<S: Service>(model: Model, service: S, config: ServeConfig) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Arc::new(Shutdown::new().unwrap());
    let (tx, done) = mpsc::channel();
    let stop = shutdown.clone();
    std::thread::spawn(move || tx.send(serve_until(model, service, listener, &config, stop)));
    Server { addr, shutdown, done }
}

impl Server {
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    fn stop(self) -> ServeReport {
        self.shutdown.trigger();
        self.done.recv_timeout(Duration::from_secs(10)).expect("the server stops").expect("serving succeeded")
    }
}

fn echo_round_trip(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).unwrap();
    let mut back = vec![0; text.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, text);
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the line is complete");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

const MODELS: [Model; 2] = [Model::Green, Model::Hybrid];

#[test]
fn echo_over_concurrent_connections() {
    for model in MODELS {
        let server = start(model, Echo::default(), ServeConfig { threads: 2, ..ServeConfig::for_model(model) });
        // All open at once: each is served while the others wait for input.
        let mut conns: Vec<_> = (0..8).map(|_| server.connect()).collect();
        for round in 0..3 {
            for (i, conn) in conns.iter_mut().enumerate().rev() {
                echo_round_trip(conn, format!("{model} round {round} conn {i}\n").as_bytes());
            }
        }
        drop(conns);
        assert_eq!(server.stop().accepted, 8, "{model}");
    }
}

#[test]
fn half_close_still_delivers_the_echo() {
    for model in MODELS {
        let server = start(model, Echo::default(), ServeConfig::for_model(model));
        let mut conn = server.connect();
        conn.write_all(b"last words").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"last words", "{model}");
        server.stop();
    }
}

#[test]
fn large_echo_under_backpressure() {
    for model in MODELS {
        let server = start(model, Echo::default(), ServeConfig::for_model(model));
        let mut conn = server.connect();
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        // The client writes everything before it reads: the server must hold back rather
        // than buffer the whole stream or deadlock.
        let mut writer = conn.try_clone().unwrap();
        let sent = data.clone();
        let writing = std::thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        writing.join().unwrap();
        assert!(back == data, "{model}: {} of {} bytes echoed intact", back.len(), data.len());
        server.stop();
    }
}

#[test]
fn idle_connection_is_closed() {
    let limits = Limits { idle_timeout: Duration::from_millis(100), ..Limits::default() };
    for model in MODELS {
        let server = start(model, Echo { limits: limits.clone() }, ServeConfig::for_model(model));
        let mut conn = server.connect();
        echo_round_trip(&mut conn, b"then silence");
        assert_eq!(conn.read(&mut [0; 16]).unwrap(), 0, "{model}: closed by the server");
        server.stop();
    }
}

#[test]
fn shutdown_closes_open_connections_and_stops() {
    for model in MODELS {
        let server = start(model, Echo::default(), ServeConfig::for_model(model));
        let mut conns: Vec<_> = (0..3).map(|_| server.connect()).collect();
        for conn in &mut conns {
            echo_round_trip(conn, b"here");
        }
        let report = server.stop();
        for conn in &mut conns {
            assert_eq!(conn.read(&mut [0; 16]).unwrap(), 0, "{model}: said goodbye");
        }
        assert_eq!((report.accepted, report.refused), (3, 0), "{model}");
    }
}

#[test]
fn refuses_beyond_max_conns() {
    for model in MODELS {
        let server = start(model, Echo::default(), ServeConfig { max_conns: 1, ..ServeConfig::for_model(model) });
        let mut first = server.connect();
        echo_round_trip(&mut first, b"in");
        let mut second = server.connect();
        assert_eq!(second.read(&mut [0; 16]).unwrap(), 0, "{model}: refused");
        echo_round_trip(&mut first, b"still served");
        drop(first);
        let report = server.stop();
        assert_eq!((report.accepted, report.refused), (1, 1), "{model}");
    }
}

/// Client A is answered and its session starts a blocking call; then client B connects.
/// Returns how long after A's answer B's answer came, and whether A's connection was
/// already closed (its blocking call over) when B's answer arrived.
fn second_client_after_a_blocking_call(model: Model, helpers: usize, delay: Duration) -> (Duration, bool) {
    let config = ServeConfig { threads: 2, helpers, ..ServeConfig::for_model(model) };
    let server = start(model, TimeServer { delay, ..TimeServer::default() }, config);
    let mut a = server.connect();
    read_line(&mut a);
    let a_answered = Instant::now();
    let mut b = server.connect();
    read_line(&mut b);
    let gap = a_answered.elapsed();
    a.set_nonblocking(true).unwrap();
    let a_closed = match a.read(&mut [0; 16]) {
        Ok(0) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        other => panic!("{model}: unexpected read on A: {other:?}"),
    };
    drop((a, b));
    server.stop();
    (gap, a_closed)
}

#[test]
fn green_blocking_call_stalls_every_connection() {
    let delay = Duration::from_millis(300);
    let (gap, a_closed) = second_client_after_a_blocking_call(Model::Green, 0, delay);
    assert!(a_closed, "B was answered only once A's blocking call had ended");
    assert!(gap >= delay * 3 / 4, "B waited for A's blocking call: {gap:?}");
}

#[test]
fn helpers_or_hybrid_threads_keep_a_blocking_call_from_stalling_the_rest() {
    let delay = Duration::from_millis(300);
    for (model, helpers) in [(Model::Green, 2), (Model::Hybrid, 0)] {
        let (gap, a_closed) = second_client_after_a_blocking_call(model, helpers, delay);
        assert!(!a_closed, "{model} ({helpers} helpers): B was answered during A's blocking call");
        assert!(gap < delay, "{model} ({helpers} helpers): {gap:?}");
    }
}
