//! The throwaway PostgreSQL (Debian's `postgresql`, which `scripts/test` installs) through a real
//! client, tokio-postgres: SQL round trips over loopback TCP and the unix socket, nothing left
//! after drop, committed rows surviving a kill -9 of the whole server, and a cluster on a test's
//! virtual network admitting that network's clients with the password only.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;

use tokio_postgres::{Client, NoTls};
use warren_testkit::postgres::Durability;
use warren_testkit::{LocalPostgres, VirtualNet};

fn start(tag: &str, durability: Durability) -> LocalPostgres {
    LocalPostgres::start_with(tag, durability)
        .expect("PostgreSQL (Debian's postgresql) must be installed: apt-get install postgresql")
}

async fn connect(config: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(config, NoTls).await.unwrap_or_else(|e| panic!("{config}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn show(client: &Client, setting: &str) -> String {
    client.query_one(&format!("SHOW {setting}"), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_fresh_cluster_answers_sql_and_leaves_nothing_after_drop() {
    let pg = start("roundtrip", Durability::Fast);
    let client = connect(&pg.url()).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let who = client.query_one("SELECT current_user::text, current_database()::text", &[]).await.unwrap();
    assert_eq!((who.get::<_, String>(0), who.get::<_, String>(1)), ("warren".into(), "warren".into()));

    client.batch_execute("CREATE TABLE objects (id bigint PRIMARY KEY, state text NOT NULL)").await.unwrap();
    let inserted =
        client.execute("INSERT INTO objects VALUES ($1, $2), ($3, $4)", &[&1i64, &"one", &2i64, &"two"]).await;
    assert_eq!(inserted.unwrap(), 2);
    let rows = client.query("SELECT id, state FROM objects ORDER BY id", &[]).await.unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(got, [(1, "one".to_owned()), (2, "two".to_owned())]);

    assert_eq!(show(&client, "listen_addresses").await, "127.0.0.1");
    assert_eq!(show(&client, "fsync").await, "off");
    // The unix socket in the cluster's own directory answers too.
    let socket = format!("host={} port={} user=warren dbname=warren", pg.dir().display(), pg.port());
    let one: i32 = connect(&socket).await.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // The postmaster runs only on a data directory its own user owns: never root.
    let owner = std::fs::metadata(pg.dir().join("data")).unwrap().uid();
    assert!(owner != 0 || !nix::unistd::Uid::effective().is_root(), "the cluster belongs to root");

    let (port, dir) = (pg.port(), pg.dir().to_owned());
    drop(pg);
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("the port still accepts connections");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
}

/// What a commit acknowledged is there after SIGKILL of the postmaster and its backends and a
/// restart on the same directory and port; a transaction still open at the kill is not.
#[tokio::test]
async fn committed_rows_survive_kill9_and_restart() {
    let mut pg = start("kill9", Durability::Fsync);
    let (url, first_pid) = (pg.url(), pg.pid());
    let client = connect(&url).await;
    assert_eq!(show(&client, "fsync").await, "on");
    client.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)").await.unwrap();
    for id in 0..5i64 {
        client.execute("INSERT INTO acked VALUES ($1)", &[&id]).await.unwrap();
    }
    client.batch_execute("BEGIN; INSERT INTO acked SELECT generate_series(5, 14); COMMIT").await.unwrap();
    let open = connect(&url).await;
    open.batch_execute("BEGIN; INSERT INTO acked VALUES (1000)").await.unwrap();

    pg.kill9_and_restart().unwrap();
    assert_ne!(pg.pid(), first_pid);
    assert_eq!(pg.url(), url);
    assert!(client.query_one("SELECT 1", &[]).await.is_err(), "a connection outlived the kill");

    let client = connect(&url).await;
    let ids: Vec<i64> =
        client.query("SELECT id FROM acked ORDER BY id", &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
    assert_eq!(ids, (0..15).collect::<Vec<i64>>());
}

/// A cluster on a virtual network (another namespace's host, across a bridge): the network's
/// client gets in with the password of `network_url`, and is refused without it.
#[test]
fn a_cluster_on_a_virtual_network_admits_its_clients_with_the_password_only() {
    let mut net = match VirtualNet::new("pg-net") {
        Ok(net) => net,
        Err(e) if e.kind() == ErrorKind::Unsupported => return eprintln!("skipped: {e}"),
        Err(e) => panic!("{e}"),
    };
    net.bridge("data").unwrap();
    net.host("db", &[("data", "10.99.3.5/24")]).unwrap();
    net.host("app", &[("data", "10.99.3.11/24")]).unwrap();
    let net = std::sync::Arc::new(net);
    let in_db = net.clone();
    let pg = std::thread::spawn(move || {
        in_db.enter_thread("db").unwrap();
        LocalPostgres::start_on_network("net", "10.99.3.5".parse().unwrap(), "10.99.3.0/24")
    })
    .join()
    .unwrap()
    .expect("PostgreSQL (Debian's postgresql) must be installed: apt-get install postgresql");
    let url = pg.network_url().unwrap();
    let without_password = format!("postgres://warren@10.99.3.5:{}/warren", pg.port());
    let in_app = net.clone();
    let (with, without) = std::thread::spawn(move || {
        in_app.enter_thread("app").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let with = async {
                let client = connect(&url).await;
                client.query_one("SELECT 1", &[]).await.map(|row| row.get::<_, i32>(0))
            };
            (with.await, tokio_postgres::connect(&without_password, NoTls).await.map(|_| ()))
        })
    })
    .join()
    .unwrap();
    assert_eq!(with.unwrap(), 1, "the data network's client gets in with the password");
    // The server asked for a password the client did not have (the cause, in Debug).
    let refused = without.expect_err("no password, no entry");
    assert!(format!("{refused:?}").contains("password missing"), "{refused:?}");
}
