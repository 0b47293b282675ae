//! The object server on PostgreSQL (`--store postgres://…`, a throwaway server from
//! `warren-testkit`): a persistent counter keeps every acknowledged `add` through a kill -9 of
//! the object server. Two servers sharing one database: `objects_shared.rs`.

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
