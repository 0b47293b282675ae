//! Support for the etcd cluster test: the clients that load the registry ([`load`]), a DNS
//! question ([`dns`]), and what etcd's members say of themselves (their maintenance status).

pub mod dns;
pub mod load;

use std::time::{Duration, Instant};

use etcd_client::Client;

/// How long one status question to a member may take.
const STATUS_WITHIN: Duration = Duration::from_secs(1);

/// What member `url` says: its own id and the leader it follows (0: none), or `None` if it
/// does not answer.
pub async fn status(url: &str) -> Option<(u64, u64)> {
    let ask = async {
        let mut client = Client::connect([url], None).await.ok()?;
        let status = client.status().await.ok()?;
        Some((status.header()?.member_id(), status.leader()))
    };
    tokio::time::timeout(STATUS_WITHIN, ask).await.ok().flatten()
}

/// The index of the member that says it leads, among `running` members of `urls`, waiting
/// (bounded) until one does and every running member follows it.
pub async fn leader(urls: &[String], running: &[bool], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut said = Vec::new();
        for (i, url) in urls.iter().enumerate().filter(|(i, _)| running[*i]) {
            said.push((i, status(url).await));
        }
        let leads = said.iter().find_map(|(i, s)| s.filter(|(me, leader)| me == leader).map(|(me, _)| (*i, me)));
        if let Some((i, id)) = leads
            && said.iter().all(|(_, s)| matches!(s, Some((_, leader)) if *leader == id))
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader followed by every running member within {within:?}: {said:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
