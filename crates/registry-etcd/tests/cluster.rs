//! The etcd store on a three-member cluster (Debian's `etcd-server`), each member killed with
//! SIGKILL in turn and started again, so that one of the kills takes the member a stream was on
//! and one takes the leader: a watch goes on from where it was (no event missed, none twice,
//! never ended), a lease renewed throughout survives, and writes go on through the others.

use std::future::Future;
use std::time::{Duration, Instant};

use warren_registry::backend::Backend;
use warren_registry::model::{Endpoint, Error, Name, Revision};
use warren_registry_etcd::{Etcd, EtcdConfig};
use warren_testkit::{EtcdCluster, RaftTiming};

/// Short raft timing, so that an election is over in about a second (etcd's defaults: 100 ms
/// and 1 s).
const TIMING: RaftTiming = RaftTiming { heartbeat: Duration::from_millis(50), election: Duration::from_millis(500) };
/// The bound on each wait: a write going through, an event arriving.
const WITHIN: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok";

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn ep(addr: &str) -> Endpoint {
    Endpoint::tcp(addr.parse().unwrap())
}

/// Waits (bounded) until member `url` answers and follows a leader: back in the cluster.
async fn rejoined(url: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let status = async { etcd_client::Client::connect([url], None).await?.status().await };
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), status).await
            && status.leader() != 0
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not rejoin within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `op` until it is answered with anything but `Unavailable` (a member down, an election
/// under way), for at most [`WITHIN`].
async fn through<T, F: Future<Output = Result<T, Error>>>(mut op: impl FnMut() -> F) -> Result<T, Error> {
    let deadline = Instant::now() + WITHIN;
    loop {
        match op().await {
            Err(Error::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("unavailable, trying again: {why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_and_a_lease_outlive_each_member_in_turn() {
    let mut cluster = EtcdCluster::start("store", TIMING).expect("etcd (Debian's etcd-server) must be installed");
    let store = Etcd::connect(EtcdConfig::from_url(&cluster.store_url("/cluster/")).unwrap()).await.unwrap();
    let (from, _) = through(|| store.list("")).await.unwrap();
    let mut watch = store.watch("", from).await.unwrap();
    let held = name("held");
    let lease = through(|| store.register(&held, TOKEN, ep("127.0.0.9:80"), Duration::from_secs(10))).await.unwrap();

    let mut written: Vec<Revision> = vec![lease.revision];
    for member in 0..3 {
        let before = name(&format!("before-{member}"));
        written.push(through(|| store.bind(&before, TOKEN, vec![ep("127.0.0.1:1")])).await.unwrap());
        cluster.kill(member);
        let after = name(&format!("after-{member}"));
        written.push(through(|| store.bind(&after, TOKEN, vec![ep("127.0.0.1:2")])).await.unwrap());
        through(|| store.renew(lease.id, TOKEN)).await.expect("the lease outlives a member's death");
        cluster.restart(member).unwrap();
        // Back in the cluster before the next member goes, so that two remain.
        rejoined(&cluster.client_urls()[member]).await;
    }

    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let events = tokio::time::timeout(WITHIN, watch.next()).await.expect("events within the bound");
        seen.extend(events.expect("the watch does not end").into_iter().map(|e| e.revision));
    }
    assert_eq!(seen, written, "every write once, in revision order");
    through(|| store.renew(lease.id, TOKEN)).await.unwrap();
    let (_, entry) = through(|| store.lookup(&held)).await.unwrap();
    assert_eq!(entry.endpoints, [ep("127.0.0.9:80")]);
}
