//! The object server on PostgreSQL (`--store postgres://…`, a throwaway server from
//! `warren-testkit`): a persistent counter keeps every acknowledged `add` through a kill -9 of
//! the object server, and two object servers on one database share the object.

#[macro_use]
mod support;

use std::path::PathBuf;

use nix::sys::signal::Signal;
use support::{BIN, Server, T};
use warren_objects::examples::CounterClient;
use warren_rpc::{Connection, Target};
use warren_testkit::LocalPostgres;
use warren_testkit::postgres::Durability;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-objects-pg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn serve(url: &str, data: &std::path::Path) -> Server {
    Server::spawn(&[
        "objects",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        url,
        "--data",
        data.to_str().unwrap(),
        "--bare",
    ])
}

fn add_counter(server: &Server, data: &std::path::Path, name: &str) {
    let token = data.join("admin.token");
    let out = std::process::Command::new(BIN)
        .args(["objects", "add", name, "--class", "counter", "--persistent"])
        .args(["--server", &server.addr.to_string(), "--token-file", token.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "add: {}", String::from_utf8_lossy(&out.stderr));
}

async fn counter(server: &Server, name: &str) -> CounterClient {
    let conn = Connection::connect(server.addr, T).await.unwrap();
    CounterClient::new(Target::on(&conn, name).with_timeout(T))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_add_survives_a_kill_9_of_the_object_server() {
    let pg = LocalPostgres::start_with("objects-kill9", Durability::Fsync)
        .expect("PostgreSQL (Debian's postgresql) must be installed: scripts/test installs it");
    let data = scratch("kill9");
    let server = serve(&pg.url(), &data);
    add_counter(&server, &data, "Tally");
    let tally = counter(&server, "Tally").await;
    let mut acknowledged = 0;
    for _ in 0..50 {
        acknowledged = tally.add(1).await.unwrap();
    }
    // One more call in flight while the server dies: it may or may not have been saved.
    let in_flight = tokio::spawn(async move { tally.add(1).await });
    let killed = server.stop_with(Signal::SIGKILL);
    assert!(!killed.status.success());
    let _ = in_flight.await;

    let server = serve(&pg.url(), &data);
    let after = counter(&server, "tally").await.get().await.unwrap();
    assert!(
        after == acknowledged || after == acknowledged + 1,
        "{acknowledged} adds were acknowledged before the kill; after it the counter is {after}"
    );
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_object_servers_on_one_database_serve_the_same_object() {
    let pg = LocalPostgres::start("objects-shared").expect("PostgreSQL must be installed");
    let (data_a, data_b) = (scratch("a"), scratch("b"));
    let a = serve(&pg.url(), &data_a);
    add_counter(&a, &data_a, "Shared");
    assert_eq!(counter(&a, "Shared").await.add(5).await.unwrap(), 5);
    // B finds the object in the database at its start, with the state A saved.
    let b = serve(&pg.url(), &data_b);
    let on_b = counter(&b, "Shared").await;
    assert_eq!(on_b.get().await.unwrap(), 5);
    assert_eq!(on_b.add(1).await.unwrap(), 6);
    // A's servant still holds 5: its next save loses the race and says so; the call after it
    // starts from the stored state.
    let on_a = counter(&a, "Shared").await;
    let conflict = on_a.add(1).await.unwrap_err();
    assert_eq!(conflict.code(), Some(warren_rpc::Code::Conflict), "{conflict}");
    assert_eq!(on_a.add(1).await.unwrap(), 7);
    assert_eq!(on_b.get().await.unwrap(), 6, "B's servant keeps what it had until it saves");
    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_dir_all(&data_a);
    let _ = std::fs::remove_dir_all(&data_b);
}
