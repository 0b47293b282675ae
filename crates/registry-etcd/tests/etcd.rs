//! The behavioural suite against etcd (Debian's `etcd-server`, which `scripts/test` installs):
//! each test starts its own single-node etcd on loopback with a fresh data directory.

mod suite;

use std::time::Duration;

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

#[test]
fn store_urls_parse() {
    let c = EtcdConfig::from_url("etcd://10.0.0.1:2379,10.0.0.2:2379/reg").unwrap();
    assert_eq!(c.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    assert_eq!(c.prefix, "/reg");
    assert_eq!(EtcdConfig::from_url("etcd://h:1").unwrap().prefix, "/warren/");
    assert!(EtcdConfig::from_url("http://h:1").is_err() && EtcdConfig::from_url("etcd:///p").is_err());
}
