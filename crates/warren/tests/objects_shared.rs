//! Two object servers hosting one persistent object over one store, SQLite (a file both open)
//! and PostgreSQL (a throwaway server from `warren-testkit`): every read, through either
//! server, sees every write acknowledged before it, and writes racing through both servers are
//! all answered, none lost, the lost races run again inside the servers.

#[macro_use]
mod objects_support;
mod support;

use std::path::{Path, PathBuf};

use objects_support::{add_counter, counter};
use support::Server;
use warren_objects::examples::CounterClient;
use warren_testkit::LocalPostgres;

/// A path of its own, not yet made (a server makes its data directory private).
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-objects-shared-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn serve(store: &str, data: &Path) -> Server {
    let data = data.to_str().unwrap();
    Server::spawn(&["objects", "serve", "--listen", "127.0.0.1:0", "--store", store, "--data", data, "--bare"])
}

/// Adds each racing writer makes, one after another, through its server.
const RACING_ADDS: i64 = 40;

/// The behaviour both stores must give two servers sharing `Shared`.
async fn two_servers_share_one_object(store: &str, tag: &str) {
    let (data_a, data_b) = (scratch(&format!("{tag}-a")), scratch(&format!("{tag}-b")));
    let a = serve(store, &data_a);
    add_counter(&a, &data_a, "Shared");
    let b = serve(store, &data_b);
    let servers = [counter(&a, "Shared").await, counter(&b, "Shared").await];

    // One client, writes and reads alternating between the servers: no conflict reaches it, and
    // each read, on the server that wrote or the other, sees every add answered before it.
    for i in 0..20i64 {
        let (writer, reader) = (&servers[(i % 2) as usize], &servers[((i + 1) % 2) as usize]);
        assert_eq!(writer.add(1).await.unwrap(), i + 1, "add {} through server {}", i + 1, i % 2);
        assert_eq!(reader.get().await.unwrap(), i + 1, "read through the other server after add {}", i + 1);
        assert_eq!(writer.get().await.unwrap(), i + 1, "read through the writer after add {}", i + 1);
    }

    // Two writers at once, one per server, each reading through the other server after every
    // add: every add is answered (its lost races ran again inside its server), each with a value
    // of its own, and each read is at least the value its writer was just answered.
    let racer = |mine: CounterClient, other: CounterClient| async move {
        let mut answers = Vec::new();
        for _ in 0..RACING_ADDS {
            let value = mine.add(1).await.unwrap_or_else(|e| panic!("a racing add failed: {e}"));
            let seen = other.get().await.unwrap();
            assert!(seen >= value, "the other server read {seen} after an add answered {value}");
            answers.push(value);
        }
        answers
    };
    let (first, second) = (counter(&a, "Shared").await, counter(&b, "Shared").await);
    let (on_a, on_b) = (counter(&b, "Shared").await, counter(&a, "Shared").await);
    let (from_a, from_b) = tokio::join!(racer(first, on_a), racer(second, on_b));
    for answers in [&from_a, &from_b] {
        assert!(answers.windows(2).all(|w| w[0] < w[1]), "one writer's adds answer in order: {answers:?}");
    }
    let mut all: Vec<i64> = from_a.into_iter().chain(from_b).collect();
    all.sort();
    assert_eq!(all, (21..=20 + 2 * RACING_ADDS).collect::<Vec<_>>(), "every add made a value of its own, none lost");
    for server in &servers {
        assert_eq!(server.get().await.unwrap(), 20 + 2 * RACING_ADDS);
    }

    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_dir_all(&data_a);
    let _ = std::fs::remove_dir_all(&data_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_sqlite_file_read_every_acknowledged_write() {
    let dir = scratch("sqlite");
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite:{}", dir.join("objects.db").display());
    two_servers_share_one_object(&store, "sqlite").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_read_every_acknowledged_write() {
    let pg = LocalPostgres::start("objects-shared").expect("PostgreSQL (Debian's postgresql) must be installed");
    two_servers_share_one_object(&pg.url(), "postgres").await;
}
