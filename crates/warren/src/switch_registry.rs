//! Backends named in the registry: `warren switch --registry ADDR --backend-name NAME`. Every
//! endpoint bound or registered under NAME is a backend, and the set follows the registry
//! without a reload: for each name, a `list` gives the endpoints at some revision and a watch
//! from that revision gives every change after it, so none slips between the two.
//!
//! An endpoint's metadata configures its backend as a `--backend` line's options do: `service`
//! (comma-separated), `drain` (`true`), `proxy` (`v1`, `v2`), `group` (the http mode's routing
//! group), and `load` (0 to 1, what the `load` policy reads; a server reports it by registering
//! with new metadata). Its weight is the registry's.
//! In hand-off mode the backend is the endpoint's `handoff` metadata (a socket path or @name);
//! endpoints without it are skipped.
//!
//! If the registry cannot be reached or a watch ends (compaction, a lost connection), the
//! switch keeps the backends it knows, says so once, and connects again with a backoff: a
//! registry outage must not empty a working cluster (nginx and HAProxy keep their last
//! resolution too).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use warren_registry::client::Client;
use warren_registry::{Endpoint, EndpointKey, Name, Revision};

/// How long connecting to the registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One registry endpoint as the switch sees it: the backend's name (an address, or a hand-off
/// socket), its `--backend` options, and the load it reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The backend line, `ADDR,weight=N,...`, parsed as a `--backend` is.
    pub line: String,
    /// The backend's name alone (the line's first field).
    pub name: String,
    pub load: Option<f64>,
}

/// What the followed names hold now: every endpoint of every name, in a stable order.
pub type Update = Vec<Found>;

/// A running follower: dropping it ends its thread.
#[derive(Debug)]
pub struct Follower {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Follows `names` in the registry at `registry` on a thread of its own, calling `update` with
/// the whole set each time it changes, until the returned [`Follower`] is dropped. Returns
/// once the first set is known (and given to `update`), or fails if the registry cannot be
/// reached at the start.
pub fn follow(
    registry: SocketAddr,
    names: Vec<Name>,
    handoff: bool,
    update: impl Fn(Update) + Send + 'static,
) -> anyhow::Result<Follower> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("switch-registry".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                () = run(registry, names, handoff, update, first_tx) => {}
                _ = stopped => {}
            }
        });
    })?;
    match first_rx.recv_timeout(CONNECT_TIMEOUT * 2) {
        Ok(Ok(())) => Ok(Follower { _stop: stop }),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot follow the registry at {registry}")),
        Err(_) => anyhow::bail!("the registry at {registry} did not answer within {:?}", CONNECT_TIMEOUT * 2),
    }
}

/// The follower's loop: connect, follow every name until something breaks, keep what is known,
/// connect again.
async fn run(
    registry: SocketAddr,
    names: Vec<Name>,
    handoff: bool,
    update: impl Fn(Update),
    first: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let mut known: BTreeMap<String, BTreeMap<EndpointKey, Endpoint>> = BTreeMap::new();
    let mut first = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        let broke = follow_once(registry, &names, &mut known, |known| {
            update(flatten(known, handoff));
            if let Some(first) = first.take() {
                // Every name has been listed once: the switch may start.
                let _ = first.send(Ok(()));
            }
            backoff = BACKOFF_MIN;
        })
        .await;
        match first.take() {
            Some(first) => {
                let _ = first.send(Err(broke));
                return;
            }
            None => println!(
                "warren: switch: registry {registry}: {broke:#}; keeping the backends known, trying again in {backoff:?}"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's worth of following: lists every name, then applies each watch's events.
/// `changed` runs after the first full listing and after every change. Returns what broke.
async fn follow_once(
    registry: SocketAddr,
    names: &[Name],
    known: &mut BTreeMap<String, BTreeMap<EndpointKey, Endpoint>>,
    mut changed: impl FnMut(&BTreeMap<String, BTreeMap<EndpointKey, Endpoint>>),
) -> anyhow::Error {
    let client = match Client::connect(registry, CONNECT_TIMEOUT).await {
        Ok(client) => client,
        Err(e) => return anyhow::Error::new(e).context("cannot connect"),
    };
    let (events_tx, mut events) = mpsc::channel(64);
    let mut watches = tokio::task::JoinSet::new();
    for name in names {
        let (revision, endpoints) = match list(&client, name).await {
            Ok(listed) => listed,
            Err(e) => return e,
        };
        known.insert(name.to_string(), endpoints.into_iter().map(|e| (e.key(), e)).collect());
        let watch = client.watch(name.as_str(), revision).await;
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(e) => return anyhow::Error::new(e).context(format!("cannot watch {name}")),
        };
        let (name, tx) = (name.clone(), events_tx.clone());
        watches.spawn(async move {
            loop {
                match watch.next().await {
                    Ok(batch) => {
                        // The prefix also matches longer names (`web` and `web2`): keep this one.
                        let mine: Vec<_> = batch.into_iter().filter(|e| e.name == name).collect();
                        if tx.send(Ok(mine)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::Error::new(e).context(format!("watch of {name} ended")))).await;
                        return;
                    }
                }
            }
        });
    }
    drop(events_tx);
    changed(known);
    while let Some(batch) = events.recv().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => return e,
        };
        if batch.is_empty() {
            continue;
        }
        for event in batch {
            let set = known.entry(event.name.to_string()).or_default();
            match event.kind {
                warren_registry::EventKind::Put => {
                    set.insert(event.endpoint.key(), event.endpoint);
                }
                warren_registry::EventKind::Delete => {
                    set.remove(&event.endpoint.key());
                }
            }
        }
        changed(known);
    }
    anyhow::anyhow!("every watch ended")
}

/// The endpoints of exactly `name`, and the revision they were read at.
async fn list(client: &Client, name: &Name) -> Result<(Revision, Vec<Endpoint>), anyhow::Error> {
    let (revision, entries) =
        client.list(name.as_str()).await.map_err(|e| anyhow::Error::new(e).context(format!("cannot list {name}")))?;
    let endpoints = entries.into_iter().filter(|entry| &entry.name == name).flat_map(|entry| entry.endpoints);
    Ok((revision, endpoints.collect()))
}

/// Every endpoint of every name as a backend; one endpoint under two names counts once.
fn flatten(known: &BTreeMap<String, BTreeMap<EndpointKey, Endpoint>>, handoff: bool) -> Update {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for endpoint in known.values().flat_map(BTreeMap::values) {
        if let Some(one) = as_backend(endpoint, handoff) {
            found.entry(one.name.clone()).or_insert(one);
        }
    }
    found.into_values().collect()
}

/// An endpoint as a `--backend` line; `None` in hand-off mode without a `handoff` socket.
fn as_backend(endpoint: &Endpoint, handoff: bool) -> Option<Found> {
    let name = if handoff {
        endpoint.meta.get("handoff")?.clone()
    } else {
        SocketAddr::new(endpoint.addr, endpoint.port).to_string()
    };
    // A registry weight of 0 means "only if nothing else"; the pool's smallest share is 1.
    let mut line = format!("{name},weight={}", endpoint.weight.max(1));
    for service in endpoint.meta.get("service").into_iter().flat_map(|s| s.split(',')) {
        line.push_str(&format!(",service={}", service.trim()));
    }
    if endpoint.meta.get("drain").is_some_and(|d| d == "true") {
        line.push_str(",drain");
    }
    if let Some(proxy) = endpoint.meta.get("proxy").filter(|_| !handoff) {
        line.push_str(&format!(",proxy={proxy}"));
    }
    if let Some(group) = endpoint.meta.get("group").filter(|_| !handoff) {
        line.push_str(&format!(",group={group}"));
    }
    let load = endpoint.meta.get("load").and_then(|l| l.parse().ok());
    Some(Found { line, name, load })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoints_metadata_becomes_its_backend_options() {
        let mut endpoint = Endpoint::tcp("127.0.0.1:8001".parse().unwrap());
        endpoint.weight = 3;
        endpoint.meta.insert("service".into(), "http, https".into());
        endpoint.meta.insert("drain".into(), "true".into());
        endpoint.meta.insert("proxy".into(), "v2".into());
        endpoint.meta.insert("load".into(), "0.25".into());
        let found = as_backend(&endpoint, false).unwrap();
        assert_eq!(found.line, "127.0.0.1:8001,weight=3,service=http,service=https,drain,proxy=v2");
        assert_eq!((found.name.as_str(), found.load), ("127.0.0.1:8001", Some(0.25)));
        assert_eq!(as_backend(&endpoint, true), None, "no hand-off socket: skipped");
        endpoint.meta.insert("handoff".into(), "@web1".into());
        assert_eq!(as_backend(&endpoint, true).unwrap().line, "@web1,weight=3,service=http,service=https,drain");
        endpoint.weight = 0;
        assert!(as_backend(&endpoint, false).unwrap().line.contains(",weight=1"));
    }
}
