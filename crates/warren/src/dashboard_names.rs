//! The registry's names for the dashboard: listed once, then listed again whenever the
//! registry's watch reports a change (so a released lease leaves the page at once), and every
//! few seconds for health, which watches do not report (docs/registry.md, "Health checks").

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use warren_registry::client::Client;
use warren_registry::{Endpoint, Entry};

use crate::dashboard_view::{EndpointRow, NameRow, Names};

/// The most names the page lists: the dashboard is for a node's view, not a registry browser.
pub const MAX_NAMES: usize = 500;
/// How often health verdicts are looked at again.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// How long the registry may take to answer, and to wait before trying a lost one again.
const TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_secs(1);

/// Keeps `names` up to date with the registry at `target` (once it is known) until `stop`.
pub async fn follow(
    mut target: watch::Receiver<Option<SocketAddr>>,
    names: watch::Sender<Names>,
    mut stop: watch::Receiver<bool>,
) {
    let registry = tokio::select! {
        found = target.wait_for(Option::is_some) => match found {
            Ok(addr) => match *addr {
                Some(addr) => addr,
                None => return,
            },
            Err(_) => return,
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    names.send_modify(|n| n.registry = Some(registry.to_string()));
    loop {
        let error = tokio::select! {
            e = watch_once(registry, &names) => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        names.send_if_modified(|n| {
            let was = n.error.replace(format!("{error:#}"));
            was != n.error
        });
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Lists every name, then lists again at each change and each [`HEALTH_EVERY`], until the
/// connection or the watch fails.
async fn watch_once(registry: SocketAddr, names: &watch::Sender<Names>) -> anyhow::Error {
    let client = match Client::connect(registry, TIMEOUT).await {
        Ok(client) => client,
        Err(e) => return anyhow::anyhow!("cannot reach the registry at {registry}: {e}"),
    };
    let revision = match refresh(&client, names).await {
        Ok(revision) => revision,
        Err(e) => return e,
    };
    let mut changes = match client.watch("", revision).await {
        Ok(changes) => changes,
        Err(e) => return anyhow::anyhow!("cannot watch the registry: {e}"),
    };
    let mut health = tokio::time::interval(HEALTH_EVERY);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            events = changes.next() => if let Err(e) = events {
                return anyhow::anyhow!("the registry's watch ended: {e}");
            },
            _ = health.tick() => {}
        }
        if let Err(e) = refresh(&client, names).await {
            return e;
        }
    }
}

/// Lists every name with each endpoint's health; publishes the list if it changed.
async fn refresh(client: &Client, names: &watch::Sender<Names>) -> anyhow::Result<warren_registry::Revision> {
    let (revision, mut entries) = tokio::time::timeout(TIMEOUT, client.list(""))
        .await
        .map_err(|_| anyhow::anyhow!("the registry did not answer within {TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot list the registry: {e}"))?;
    entries.truncate(MAX_NAMES);
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        // Lookups leave out failing endpoints; only names with a check need one.
        let healthy = if entry.endpoints.iter().any(checked) {
            match tokio::time::timeout(TIMEOUT, client.lookup(&entry.name)).await {
                Ok(Ok((_, found))) => Some(found.endpoints.iter().map(Endpoint::key).collect()),
                _ => Some(HashSet::new()),
            }
        } else {
            None
        };
        rows.push(row(entry, healthy.as_ref()));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    names.send_if_modified(|n| {
        let changed = n.names != rows || n.error.is_some();
        n.names = rows;
        n.error = None;
        changed
    });
    Ok(revision)
}

fn checked(endpoint: &Endpoint) -> bool {
    endpoint.meta.contains_key("check")
}

/// `entry` as the page shows it; `healthy` holds the endpoints a lookup returned, for names
/// with a health check.
fn row(entry: Entry, healthy: Option<&HashSet<warren_registry::EndpointKey>>) -> NameRow {
    let endpoints = entry
        .endpoints
        .into_iter()
        .map(|e| EndpointRow {
            addr: e.socket_addr().to_string(),
            transport: e.transport.to_string(),
            weight: e.weight,
            health: match healthy {
                Some(healthy) if checked(&e) && healthy.contains(&e.key()) => "healthy",
                Some(_) if checked(&e) => "failing",
                _ => "unchecked",
            },
            meta: e.meta,
        })
        .collect();
    NameRow { name: entry.name.as_str().to_owned(), endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_registry::Name;

    #[test]
    fn health_is_the_lookups_verdict_for_checked_endpoints_only() {
        let mut checked = Endpoint::tcp("127.0.0.1:1".parse().unwrap());
        checked.meta.insert("check".into(), "tcp".into());
        let mut failing = checked.clone();
        failing.port = 2;
        let plain = Endpoint::tcp("127.0.0.1:3".parse().unwrap());
        let entry = Entry { name: Name::new("web").unwrap(), endpoints: vec![checked.clone(), failing, plain] };
        let healthy = HashSet::from([checked.key()]);
        let row = row(entry, Some(&healthy));
        let verdicts: Vec<_> = row.endpoints.iter().map(|e| (e.addr.as_str(), e.health)).collect();
        assert_eq!(verdicts, [("127.0.0.1:1", "healthy"), ("127.0.0.1:2", "failing"), ("127.0.0.1:3", "unchecked")]);
    }
}
