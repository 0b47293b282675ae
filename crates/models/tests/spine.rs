//! The spine's streams through real sockets: a session that connects out and relays, and a
//! connection handed from one server to another, under every in-process model.

use std::io::{Read, Write};
use std::net::{Shutdown as Half, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use warren_models::handoff::HandOffListener;
use warren_models::{Listener, Model, ServeConfig, ServeReport, Shutdown, serve_until};
use warren_proto::echo::Echo;
use warren_proto::handoff::{Front, Peek};
use warren_proto::relay::Relay;
use warren_proto::{HandOffTarget, Service};

const MODELS: [Model; 6] = [Model::Iterative, Model::Thread, Model::Pool, Model::Event, Model::Green, Model::Hybrid];
/// Bounds every client read, so that a broken driver fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<std::io::Result<ServeReport>>>,
}

impl Server {
    fn start<S: Service>(model: Model, service: S, listener: impl Into<Listener>) -> Self {
        let listener = listener.into();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let stop = shutdown.clone();
        let config = ServeConfig::for_model(model);
        let thread = std::thread::spawn(move || serve_until(model, service, listener, &config, stop));
        Self { shutdown, thread: Some(thread) }
    }

    fn stop(mut self) -> ServeReport {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn a_relay_joins_client_and_backend_both_ways_under_every_model() {
    for model in MODELS {
        let backend_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_addr = backend_listener.local_addr().unwrap();
        let backend = Server::start(Model::Event, Echo::default(), backend_listener);
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let relay = Server::start(model, Relay::new(backend_addr), front);

        let mut client = connect(front_addr);
        // Sent before the backend may be connected: kept and sent first.
        client.write_all(b"first ").unwrap();
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut client = client.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || {
                client.write_all(&big).unwrap();
                client.shutdown(Half::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(&back[..6], b"first ", "{model}");
        assert!(back[6..] == big[..], "{model}: the 2 MB came back whole and in order");
        drop(client);
        relay.stop();
        backend.stop();
    }
}

#[test]
fn an_unreachable_backend_closes_the_client() {
    let unused = TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = unused.local_addr().unwrap();
    drop(unused);
    for model in MODELS {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let relay = Server::start(model, Relay::new(gone), front);
        let mut client = connect(addr);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "{model}");
        relay.stop();
    }
}

#[test]
fn a_connection_handed_over_is_answered_by_the_receiver_with_its_first_bytes() {
    for model in MODELS {
        let target = HandOffTarget::new(format!("@warren-spine-{}-{}-{model}", std::process::id(), fastrand::u64(..)));
        let receiver = Server::start(model, Echo::default(), HandOffListener::bind(&target).unwrap());
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let sender = Server::start(model, Front::new(target, Peek::Line), front);

        let mut client = connect(addr);
        client.write_all(b"hello\n").unwrap();
        let mut line = [0u8; 6];
        client.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"hello\n", "{model}: the receiver echoed the bytes the front had read");
        // The front is out of the picture: stopping it leaves the connection with the receiver.
        let report = sender.stop();
        assert_eq!(report.accepted, 1, "{model}");
        client.write_all(b"still here").unwrap();
        let mut more = [0u8; 10];
        client.read_exact(&mut more).unwrap();
        assert_eq!(&more, b"still here", "{model}");
        drop(client);
        receiver.stop();
    }
}
