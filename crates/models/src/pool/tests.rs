use std::time::Duration;

use warren_proto::timeserver::TimeServer;

use crate::event::tests::*;
use crate::run::{Model, ServeConfig};

/// Fewer workers than the tests' concurrent clients: the pool serves any number of them.
fn config() -> ServeConfig {
    ServeConfig { threads: 2, ..ServeConfig::for_model(Model::Pool) }
}

#[test]
fn echo_round_trips_with_more_clients_than_threads() {
    check_echo_round_trips(Model::Pool, config());
}

#[test]
fn large_echo_with_blocking_writes() {
    check_large_echo(Model::Pool, config());
}

#[test]
fn a_client_that_does_not_read_is_stopped() {
    check_backpressure(Model::Pool, config());
}

#[test]
fn half_close_delivers_the_echo_then_eof() {
    check_half_close(Model::Pool, config());
}

#[test]
fn quiet_after_eof() {
    check_quiet_after_eof(Model::Pool, config());
}

#[test]
fn idle_connection_is_closed() {
    check_idle_timeout(Model::Pool, config());
}

#[test]
fn shutdown_closes_every_connection() {
    check_shutdown(Model::Pool, config());
}

#[test]
fn chat_between_connections() {
    check_chat(Model::Pool, config());
}

#[test]
fn refuses_beyond_max_conns() {
    check_max_conns(Model::Pool, config());
}

#[test]
fn a_full_queue_refuses_new_connections() {
    let config = ServeConfig { threads: 1, queue: 1, ..ServeConfig::for_model(Model::Pool) };
    let server =
        Server::start(Model::Pool, TimeServer { delay: Duration::from_millis(500), ..TimeServer::default() }, config);
    let mut busy = server.connect();
    read_line(&mut busy);
    // The only worker is in its blocking call: the next connection fills the queue.
    let mut queued = server.connect();
    assert_eq!(read_to_eof(&mut server.connect()), b"", "refused at once, without the time");
    assert!(read_line(&mut queued).ends_with("\r\n"), "the queued connection is served once the worker is free");
    drop((busy, queued));
    let report = server.stop();
    assert_eq!((report.accepted, report.refused), (2, 1));
}

#[test]
fn a_blocking_call_stalls_only_its_worker() {
    let block = Duration::from_secs(2);
    let server = Server::start(Model::Pool, TimeServer { delay: block, ..TimeServer::default() }, config());
    let start = std::time::Instant::now();
    let mut first = server.connect();
    read_line(&mut first);
    let mut second = server.connect();
    read_line(&mut second);
    assert!(start.elapsed() < block, "the second answer came from the other worker");
    drop((first, second));
    server.stop();
}
