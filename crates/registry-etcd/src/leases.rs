//! Registry leases as etcd leases: grant (with an id drawn at random), renew over a keep-alive
//! stream, revoke.
//!
//! etcd renews a lease over a bidirectional keep-alive stream, and the client ties each stream to
//! one lease. Opening one per renewal would cost a stream set-up per call, so the streams of
//! leases renewed recently are kept, up to [`MAX_STREAMS`]; past that the oldest is dropped and
//! reopened when next needed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseGrantOptions, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::Mutex;
use warren_registry::model::{Error, LeaseId, Revision};

use crate::{etcd_id, lease_id, unavailable};

/// Tries at drawing a lease id that etcd does not hold yet.
const GRANT_ATTEMPTS: usize = 4;

/// Keep-alive streams kept open at once.
const MAX_STREAMS: usize = 1024;

type Stream = Arc<Mutex<(LeaseKeeper, LeaseKeepAliveStream)>>;

pub struct Keepers {
    client: Client,
    streams: Mutex<(HashMap<i64, Stream>, VecDeque<i64>)>,
}

impl std::fmt::Debug for Keepers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keepers").finish_non_exhaustive()
    }
}

impl Keepers {
    pub fn new(client: Client) -> Keepers {
        Keepers { client, streams: Mutex::default() }
    }

    /// A new lease of at least `ttl` (whole seconds, rounded up); its id and the TTL etcd granted.
    /// The id is random (etcd's own are a member id and a counter, easy to guess).
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), Error> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let mut last = None;
        for _ in 0..GRANT_ATTEMPTS {
            // 63 random bits: etcd's ids are positive i64s.
            let id = (LeaseId::random()?.0 as u64 >> 1) as i64;
            if id == 0 {
                continue;
            }
            match self.client.clone().lease_grant(secs as i64, Some(LeaseGrantOptions::new().with_id(id))).await {
                Ok(granted) => return Ok((granted.id(), Duration::from_secs(granted.ttl().max(0) as u64))),
                Err(e) if e.to_string().contains("lease already exists") => last = Some(e),
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(last.map_or_else(|| Error::Unavailable("no lease id could be drawn".into()), unavailable))
    }

    /// One keep-alive: the lease lives another full TTL; `LeaseNotFound` if it ran out.
    pub async fn renew(&self, lease: LeaseId) -> Result<Duration, Error> {
        let id = etcd_id(lease)?;
        let stream = self.stream(id).await?;
        let answer = {
            let mut guard = stream.lock().await;
            let (keeper, responses) = &mut *guard;
            match keeper.keep_alive().await {
                Ok(()) => responses.message().await,
                Err(e) => Err(e),
            }
        };
        match answer {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(Duration::from_secs(answer.ttl() as u64)),
            Ok(Some(_)) => {
                self.forget(id).await;
                Err(Error::LeaseNotFound(lease))
            }
            Ok(None) => {
                self.forget(id).await;
                Err(Error::Unavailable("etcd closed the keep-alive stream".into()))
            }
            Err(e) => {
                self.forget(id).await;
                Err(keep_alive_failed(e, lease))
            }
        }
    }

    /// Ends a lease now; etcd deletes its keys in one revision.
    pub async fn revoke(&self, lease: LeaseId) -> Result<Revision, Error> {
        let id = etcd_id(lease)?;
        self.forget(id).await;
        match self.client.clone().lease_revoke(id).await {
            Ok(done) => Ok(Revision(done.header().map_or(0, |h| h.revision()).max(0) as u64)),
            Err(e) if e.to_string().contains("requested lease not found") => Err(Error::LeaseNotFound(lease)),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn stream(&self, id: i64) -> Result<Stream, Error> {
        if let Some(stream) = self.streams.lock().await.0.get(&id) {
            return Ok(stream.clone());
        }
        let opened = self.client.clone().lease_keep_alive(id).await.map_err(|e| keep_alive_failed(e, lease_id(id)))?;
        let stream = Arc::new(Mutex::new(opened));
        let mut streams = self.streams.lock().await;
        let (map, order) = &mut *streams;
        if map.insert(id, stream.clone()).is_none() {
            order.push_back(id);
        }
        while map.len() > MAX_STREAMS {
            let oldest = order.pop_front().expect("order lists every stream");
            map.remove(&oldest);
        }
        Ok(stream)
    }

    async fn forget(&self, id: i64) {
        let mut streams = self.streams.lock().await;
        let (map, order) = &mut *streams;
        if map.remove(&id).is_some() {
            order.retain(|&o| o != id);
        }
    }
}

/// This client reports a lapsed lease as an error on the keep-alive stream, not as TTL 0.
fn keep_alive_failed(e: etcd_client::Error, lease: LeaseId) -> Error {
    match e {
        etcd_client::Error::LeaseKeepAliveError(why) if why.contains("not found") => Error::LeaseNotFound(lease),
        e => unavailable(e),
    }
}
