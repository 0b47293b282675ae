//! `watch` as an etcd watch: from the revision after `from`, with each deleted key's last value
//! attached so that a `Delete` event names the endpoint it removed.

use async_trait::async_trait;
use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use warren_registry::backend::Watch;
use warren_registry::model::{Error, Event, EventKind, Revision};

use crate::keys::{Keys, Stored};
use crate::unavailable;

#[derive(Debug)]
pub struct EtcdWatch {
    stream: WatchStream,
    keys: Keys,
}

impl EtcdWatch {
    /// Starts the watch and waits for etcd to confirm it (or to say `from` was compacted).
    pub async fn start(mut client: Client, keys: Keys, prefix: &str, from: Revision) -> Result<EtcdWatch, Error> {
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from.0 as i64 + 1);
        let stream = client.watch(keys.names_with_prefix(prefix), Some(options)).await.map_err(unavailable)?;
        Ok(EtcdWatch { stream, keys })
    }
}

#[async_trait]
impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<Vec<Event>, Error> {
        loop {
            let Some(answer) = self.stream.message().await.map_err(unavailable)? else {
                return Err(Error::Unavailable("etcd ended the watch".into()));
            };
            let events = events(&self.keys, &answer)?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

/// The registry events in one watch answer; an error if etcd cancelled the watch.
pub fn events(keys: &Keys, answer: &WatchResponse) -> Result<Vec<Event>, Error> {
    if answer.canceled() || answer.compact_revision() > 0 {
        if answer.compact_revision() > 0 {
            // etcd keeps revisions from compact_revision on; a watch from r starts at r + 1.
            return Err(Error::Compacted { oldest: Revision(answer.compact_revision() as u64 - 1) });
        }
        return Err(Error::Unavailable(format!("etcd cancelled the watch: {}", answer.cancel_reason())));
    }
    let mut out = Vec::with_capacity(answer.events().len());
    for event in answer.events() {
        let kv = event.kv().ok_or_else(|| Error::Unavailable("a watch event without its key".into()))?;
        let (kind, value) = match event.event_type() {
            EventType::Put => (EventKind::Put, kv.value()),
            EventType::Delete => {
                let prev = event
                    .prev_kv()
                    .ok_or_else(|| Error::Unavailable("a delete event whose old value etcd no longer holds".into()))?;
                (EventKind::Delete, prev.value())
            }
        };
        let stored = Stored::decode(value)?;
        let name = keys.name_of(kv.key(), &stored)?;
        out.push(Event { revision: Revision(kv.mod_revision() as u64), kind, name, endpoint: stored.endpoint });
    }
    Ok(out)
}
