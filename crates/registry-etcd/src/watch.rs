//! `watch` as an etcd watch: from the revision after `from`, with each deleted key's last value
//! attached so that a `Delete` event names the endpoint it removed.
//!
//! An etcd watch lives on one connection to one member. When that member dies or the stream
//! breaks, the watch is opened again, on whichever member answers, from the revision after the
//! last event it delivered: etcd keeps every event of a revision in one answer, so nothing is
//! missed and nothing comes twice, and the registry's watcher sees no break. Only when no member
//! takes the watch back within [`RESUME_PATIENCE`] does the watch end.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use warren_registry::backend::Watch;
use warren_registry::model::{Error, Event, EventKind, Revision};

use crate::keys::{Keys, Stored};
use crate::unavailable;

/// How long a broken watch keeps trying to open again before it ends: enough for a cluster to
/// elect a leader and for a client's connection to move to a live member.
pub const RESUME_PATIENCE: Duration = Duration::from_secs(15);

/// The pause between two tries at opening a broken watch again.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

pub struct EtcdWatch {
    client: Client,
    keys: Keys,
    /// The etcd key prefix watched.
    watched: String,
    stream: WatchStream,
    /// The revision to go on from: the one after the last event delivered.
    next: i64,
}

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWatch").field("watched", &self.watched).field("next", &self.next).finish()
    }
}

impl EtcdWatch {
    /// Starts the watch and waits for etcd to confirm it (or to say `from` was compacted).
    pub async fn start(mut client: Client, keys: Keys, prefix: &str, from: Revision) -> Result<EtcdWatch, Error> {
        let watched = keys.names_with_prefix(prefix);
        let next = from.0 as i64 + 1;
        let stream = open(&mut client, &watched, next).await?;
        Ok(EtcdWatch { client, keys, watched, stream, next })
    }

    /// Opens the watch again from `next`, trying for up to [`RESUME_PATIENCE`]; `broken` is
    /// why it is needed, returned if no member takes the watch back.
    async fn resume(&mut self, broken: Error) -> Result<(), Error> {
        tracing::debug!("etcd watch from revision {}: {broken}; opening it again", self.next);
        let deadline = tokio::time::Instant::now() + RESUME_PATIENCE;
        let mut why = broken;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(RESUME_PAUSE).await;
            match open(&mut self.client, &self.watched, self.next).await {
                Ok(stream) => {
                    self.stream = stream;
                    return Ok(());
                }
                Err(e) => why = e,
            }
        }
        Err(why)
    }
}

async fn open(client: &mut Client, watched: &str, from: i64) -> Result<WatchStream, Error> {
    let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from);
    client.watch(watched, Some(options)).await.map_err(unavailable)
}

#[async_trait]
impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<Vec<Event>, Error> {
        loop {
            let answer = match self.stream.message().await {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    self.resume(Error::Unavailable("etcd ended the watch".into())).await?;
                    continue;
                }
                Err(e) => {
                    self.resume(unavailable(e)).await?;
                    continue;
                }
            };
            let events = events(&self.keys, &answer)?;
            if let Some(last) = events.last() {
                self.next = last.revision.0 as i64 + 1;
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
