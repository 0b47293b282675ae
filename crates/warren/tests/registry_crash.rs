//! kill -9 of `warren registry` in the middle of a stream of writes: every write it acknowledged
//! is there after a restart, leases included.

mod support;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{Server, T};
use warren_registry::client::Client;
use warren_registry::{Endpoint, Name};

/// Writers, and the most writes each makes (the server is killed long before).
const WRITERS: u16 = 8;
const WRITES: u16 = 5_000;
/// Acknowledged writes before the kill.
const BEFORE_KILL: usize = 400;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let data = std::env::temp_dir().join(format!("warren-registry-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let args = ["registry", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap(), "--admin-token", "a"];
    let server = Server::spawn(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (acks, acked) = mpsc::channel::<(String, u16)>();
    for writer in 0..WRITERS {
        let (acks, addr) = (acks.clone(), server.addr);
        rt.spawn(async move {
            let client = Client::connect(addr, T).await.unwrap();
            for i in 1..=WRITES {
                let name = format!("w{writer}-{i}");
                let endpoint = Endpoint::tcp(([127, 0, 0, 1], i).into());
                let n = Name::new(name.clone()).unwrap();
                // Odd writers register under leases, even ones bind: both kinds must survive.
                let written = if writer % 2 == 1 {
                    client.register(&n, "t", endpoint, Duration::from_secs(600)).await.map(drop)
                } else {
                    client.bind(&n, "t", vec![endpoint]).await.map(drop)
                };
                if written.is_err() || acks.send((name, i)).is_err() {
                    return;
                }
            }
        });
    }
    drop(acks);
    let mut confirmed = BTreeMap::new();
    while confirmed.len() < BEFORE_KILL {
        let (name, port) = acked.recv_timeout(T).expect("writes are acknowledged");
        confirmed.insert(name, port);
    }
    let killed = server.stop_with(Signal::SIGKILL);
    assert!(!killed.status.success());
    // Answers already on their way when the server died were acknowledged too.
    while let Ok((name, port)) = acked.recv_timeout(T) {
        confirmed.insert(name, port);
    }
    rt.shutdown_timeout(Duration::from_secs(1));

    let server = Server::spawn(&args);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_, entries) = rt
        .block_on(async {
            let client = Client::connect(server.addr, T).await.unwrap();
            client.list("w").await
        })
        .unwrap();
    let stored: BTreeMap<String, u16> =
        entries.into_iter().map(|e| (e.name.to_string(), e.endpoints[0].port)).collect();
    let lost: Vec<_> = confirmed.iter().filter(|(name, port)| stored.get(*name) != Some(port)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost: {lost:?}", lost.len(), confirmed.len());
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&data);
}
