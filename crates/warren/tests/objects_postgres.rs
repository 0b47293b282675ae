//! The object server on PostgreSQL (`--store postgres://…`, a throwaway server from
//! `warren-testkit`): a persistent counter keeps every acknowledged `add` through a kill -9 of
//! the object server. Two servers sharing one database: `objects_shared.rs`.

#[macro_use]
mod objects_support;
mod support;

use std::path::PathBuf;

use nix::sys::signal::Signal;
use objects_support::{add_counter, counter};
use support::Server;
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
