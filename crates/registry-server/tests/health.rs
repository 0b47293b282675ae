//! Health checks against real listeners on loopback: an endpoint whose check fails leaves
//! lookups and snapshots (what DNS answers from) and comes back when it passes again.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use warren_registry::backend::Backend;
use warren_registry::model::{Endpoint, Error, Name};
use warren_registry_server::embedded::Embedded;
use warren_registry_server::health::Checked;
use warren_registry_server::state::Config;

const T: Duration = Duration::from_secs(10);

struct Store(Arc<Checked>, std::path::PathBuf);

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn store(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("warren-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let inner: Arc<dyn Backend> = Arc::new(Embedded::open(&dir, Config::default(), None).unwrap());
    Store(Arc::new(Checked::new(inner).await.unwrap()), dir)
}

fn checked(addr: SocketAddr, meta: &[(&str, &str)]) -> Endpoint {
    let mut e = Endpoint::tcp(addr);
    e.meta = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
    e
}

/// Waits (bounded) until the name's healthy endpoints are `want`, through lookup and snapshot.
async fn until(b: &Checked, name: &Name, want: &[SocketAddr]) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let looked: Vec<SocketAddr> =
            b.lookup(name).await.unwrap().1.endpoints.iter().map(Endpoint::socket_addr).collect();
        let snap: Vec<SocketAddr> = b.snapshot(name).unwrap().iter().map(Endpoint::socket_addr).collect();
        if looked == want && snap == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: healthy {looked:?}, snapshot {snap:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_takes_a_dead_endpoint_out_and_brings_it_back() {
    let s = store("tcp").await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let live = listener.local_addr().unwrap();
    let plain = "127.0.0.1:9".parse().unwrap();
    let name = Name::new("svc").unwrap();
    // The shortest interval a check may have, and no debouncing, to keep the test short.
    let fast = [("check", "tcp"), ("check_interval", "1s"), ("rise", "1"), ("fall", "1")];
    s.0.bind(&name, "tok", vec![checked(live, &fast), Endpoint::tcp(plain)]).await.unwrap();
    until(&s.0, &name, &[live, plain]).await;

    drop(listener);
    until(&s.0, &name, &[plain]).await;
    let health = s.0.health(&name).await.unwrap();
    assert!(health.iter().any(|(e, h)| e.socket_addr() == live && !h), "reported unhealthy: {health:?}");

    // std's listeners set SO_REUSEADDR, so the same port can be taken again at once.
    let _back = TcpListener::bind(live).unwrap();
    until(&s.0, &name, &[live, plain]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_wants_a_2xx_or_3xx() {
    let s = store("http").await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let status = if flag.load(Ordering::Relaxed) { "200 OK" } else { "503 Service Unavailable" };
            let _ = conn.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    });
    let name = Name::new("web").unwrap();
    let meta = [("check", "http:/health"), ("check_interval", "1s"), ("rise", "1"), ("fall", "1")];
    s.0.register(&name, "tok", checked(addr, &meta), Duration::from_secs(60)).await.unwrap();
    until(&s.0, &name, &[addr]).await;
    up.store(false, Ordering::Relaxed);
    until(&s.0, &name, &[]).await;
    up.store(true, Ordering::Relaxed);
    until(&s.0, &name, &[addr]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_check_needs_reports_within_its_ttl() {
    let s = store("ttl").await;
    let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
    let name = Name::new("beat").unwrap();
    let meta = [("check", "ttl:1s"), ("rise", "1"), ("fall", "1")];
    s.0.bind(&name, "tok", vec![checked(addr, &meta)]).await.unwrap();
    // Unreported for a whole TTL: out. Reported: back.
    until(&s.0, &name, &[]).await;
    assert!(matches!(s.0.pass(&name, addr, "thief").await, Err(Error::Forbidden(_))), "a pass needs the token");
    assert!(matches!(s.0.pass(&name, addr, "").await, Err(Error::Unauthenticated(_))));
    let deadline = tokio::time::Instant::now() + T;
    loop {
        s.0.pass(&name, addr, "tok").await.unwrap();
        if s.0.lookup(&name).await.unwrap().1.endpoints.len() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a passing report never brought it back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(s.0.pass(&name, "127.0.0.1:8".parse().unwrap(), "tok").await, Err(Error::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_metadata_that_does_not_parse_is_refused() {
    let s = store("bad").await;
    let name = Name::new("bad").unwrap();
    let e = checked("127.0.0.1:1".parse().unwrap(), &[("check", "icmp")]);
    assert!(matches!(s.0.bind(&name, "tok", vec![e.clone()]).await, Err(Error::Invalid(_))));
    assert!(matches!(s.0.register(&name, "tok", e, Duration::from_secs(5)).await, Err(Error::Invalid(_))));
    assert_eq!(s.0.lookup(&name).await, Err(Error::NotBound(name)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_bounded_per_name_and_in_rate() {
    use warren_registry_server::health::spec::MAX_CHECKS_PER_NAME;
    let s = store("bounds").await;
    let name = Name::new("many").unwrap();
    let at = |port: u16| checked(SocketAddr::from(([127, 0, 0, 1], port)), &[("check", "tcp")]);
    let too_many: Vec<Endpoint> = (1..=MAX_CHECKS_PER_NAME as u16 + 1).map(at).collect();
    assert!(matches!(s.0.bind(&name, "tok", too_many).await, Err(Error::TooLarge(_))));
    for port in 1..=MAX_CHECKS_PER_NAME as u16 {
        s.0.register(&name, "tok", at(port), Duration::from_secs(60)).await.unwrap();
    }
    // The table follows the store through a watch: wait until it holds them all.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match s.0.register(&name, "tok", at(1000), Duration::from_secs(60)).await {
            Err(Error::TooLarge(_)) => break,
            Ok(lease) => _ = s.0.release(lease.id, "tok").await.unwrap(),
            Err(e) => panic!("{e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "more than {MAX_CHECKS_PER_NAME} checks were taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Registering one of them again (same address) is not one more, nor is an unchecked one.
    s.0.register(&name, "tok", at(1), Duration::from_secs(60)).await.unwrap();
    s.0.register(&name, "tok", Endpoint::tcp("127.0.0.1:2000".parse().unwrap()), Duration::from_secs(60))
        .await
        .unwrap();
    let fast = checked("127.0.0.1:1".parse().unwrap(), &[("check", "tcp"), ("check_interval", "10ms")]);
    assert!(matches!(s.0.bind(&Name::new("fast").unwrap(), "tok", vec![fast]).await, Err(Error::Invalid(_))));
}
