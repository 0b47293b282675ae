//! The behavioural suite against etcd (Debian's `etcd-server`, which `scripts/test` installs):
//! each test starts its own single-node etcd on loopback with a fresh data directory.

mod suite;

use std::time::Duration;

use warren_registry::backend::Backend;
use warren_registry_etcd::{Etcd, EtcdConfig};
use warren_testkit::LocalEtcd;

async fn make() -> (Etcd, LocalEtcd) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let server = LocalEtcd::start(&format!("suite-{n}"))
        .expect("etcd (Debian's etcd-server) must be installed: apt-get install etcd-server");
    let mut config = EtcdConfig::from_url(&server.store_url("/suite/")).unwrap();
    config.admin = Some(suite::ADMIN.to_owned());
    // etcd takes a moment to elect itself; connect waits for it.
    match Etcd::connect(config).await {
        Ok(backend) => (backend, server),
        Err(e) => panic!("etcd at {} never answered: {e}", server.url),
    }
}

// etcd grants at least 2 s and its lessor checks every 500 ms; plus scheduling slack.
behaviour_suite!(make(), Duration::from_millis(2500));

/// The keys under `prefix`, in etcd's order.
async fn keys(server: &LocalEtcd, prefix: &str) -> Vec<String> {
    let mut client = etcd_client::Client::connect([server.url.as_str()], None).await.unwrap();
    let got = client.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    got.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_name_reaches_the_same_keys() {
    let (b, server) = make().await;
    let ttl = Duration::from_secs(30);
    b.bind(&suite::name("HelloServer"), "tok", vec![suite::ep("127.0.0.1:1099")]).await.unwrap();
    b.register(&suite::name("helloserver"), "tok", suite::ep("127.0.0.2:1099"), ttl).await.unwrap();
    b.rebind(&suite::name("HELLOSERVER"), "tok", vec![suite::ep("127.0.0.1:1099"), suite::ep("127.0.0.3:1099")])
        .await
        .unwrap();
    let held = keys(&server, "/suite/ep/").await;
    assert_eq!(held, ["/suite/ep/helloserver/tcp/127.0.0.1/1099", "/suite/ep/helloserver/tcp/127.0.0.3/1099"]);
    let mut client = etcd_client::Client::connect([server.url.as_str()], None).await.unwrap();
    let got = client.get(held[1].as_str(), None).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(value["name"], "HelloServer", "the value keeps the first spelling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_before_names_had_case_are_read_as_their_key() {
    let (b, server) = make().await;
    let mut client = etcd_client::Client::connect([server.url.as_str()], None).await.unwrap();
    let old = r#"{"endpoint":{"addr":"127.0.0.1","port":80,"transport":"Tcp","weight":1,"meta":{}},"owner":"00"}"#;
    client.put("/suite/ep/web/tcp/127.0.0.1/80", old, None).await.unwrap();
    let (_, entry) = b.lookup(&suite::name("WEB")).await.unwrap();
    assert_eq!((entry.name.as_str(), entry.endpoints.len()), ("web", 1));
    let (_, entries) = b.list("W").await.unwrap();
    assert_eq!(entries.iter().map(|e| e.name.to_string()).collect::<Vec<_>>(), ["web"]);
}

#[test]
fn store_urls_parse() {
    let c = EtcdConfig::from_url("etcd://10.0.0.1:2379,10.0.0.2:2379/reg").unwrap();
    assert_eq!(c.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    assert_eq!(c.prefix, "/reg");
    assert_eq!(EtcdConfig::from_url("etcd://h:1").unwrap().prefix, "/warren/");
    assert!(EtcdConfig::from_url("http://h:1").is_err() && EtcdConfig::from_url("etcd:///p").is_err());
}
