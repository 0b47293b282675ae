//! A cached answer when every replica fails, marked stale to the caller (Consul's
//! `stale-if-error`, Eureka's last known registry).
//!
//! [`ServeStale`] keeps the last answer of every idempotent call (keyed by object, interface,
//! version, method, arguments and format). When a call fails with a server failure (the
//! platform's 5xx: `unavailable`, `overloaded`, `deadline_exceeded`, `internal`) and an answer
//! no older than [`max_age`](StalePolicy::max_age) is kept, the caller gets that answer
//! instead of the failure. Answers of methods not declared idempotent are never kept (they
//! may have changed something; replaying one would lie); the method's own error is never
//! replaced (it is an answer).
//!
//! **How the caller learns it is stale.** A [`Caller`](warren_rpc::Caller) answers bytes and
//! nothing else, and a shared "last call was stale" flag would be wrong as soon as two calls
//! run at once. So staleness travels with the task that made the call: wrap the call in
//! [`observe`], which returns the answer and `Some(Stale { age })` if any answer inside it was
//! served from the cache. This holds as long as no layer between the caller and `ServeStale`
//! moves the call to another task (tower's `Buffer` does; put `ServeStale` above it). Calls
//! not wrapped in `observe` still get the cached answer; [`StaleCache::served`] counts them.
//!
//! Defaults: answers up to 5 minutes old (the references set no default: Consul takes the age
//! per request, and serving a ten-year-old DNS answer is Consul's own choice), at most 16 MiB
//! kept, the oldest answers dropped first.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};
use warren_rpc::{Failure, RawCall};

use crate::outlier::is_server_failure;

/// How old and how much. Defaults: 5 minutes, 16 MiB.
#[derive(Clone, Debug)]
pub struct StalePolicy {
    pub max_age: Duration,
    pub max_bytes: usize,
}

impl Default for StalePolicy {
    fn default() -> Self {
        StalePolicy { max_age: Duration::from_secs(300), max_bytes: 16 << 20 }
    }
}

/// An answer served from the cache: how long ago the server gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    pub age: Duration,
}

tokio::task_local! {
    static SEEN: Arc<Mutex<Option<Stale>>>;
}

/// Run `call` (a stub's call, say) and say whether its answer came from the cache.
pub async fn observe<F: Future>(call: F) -> (F::Output, Option<Stale>) {
    let seen = Arc::new(Mutex::new(None));
    let output = SEEN.scope(seen.clone(), call).await;
    let stale = seen.lock().expect("stale").take();
    (output, stale)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    object: String,
    interface: String,
    version: u32,
    method: String,
    args: Vec<u8>,
    json: bool,
}

impl Key {
    fn of(call: &RawCall) -> Key {
        Key {
            object: call.object.clone(),
            interface: call.interface.clone(),
            version: call.version,
            method: call.method.clone(),
            args: call.args.clone(),
            json: call.json,
        }
    }

    fn size(&self) -> usize {
        self.object.len() + self.interface.len() + self.method.len() + self.args.len()
    }
}

#[derive(Debug)]
struct Kept {
    answer: Vec<u8>,
    at: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Store {
    answers: HashMap<Key, Kept>,
    /// Keys by age, oldest first: who goes when the cache is full.
    order: BTreeMap<u64, Key>,
    bytes: usize,
    next_seq: u64,
}

impl Store {
    fn keep(&mut self, key: Key, answer: Vec<u8>, max_bytes: usize) {
        self.forget(&key);
        let size = key.size() + answer.len();
        if size > max_bytes {
            return;
        }
        while self.bytes + size > max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.forget(&oldest);
        }
        self.next_seq += 1;
        self.order.insert(self.next_seq, key.clone());
        self.bytes += size;
        self.answers.insert(key, Kept { answer, at: Instant::now(), seq: self.next_seq });
    }

    fn forget(&mut self, key: &Key) {
        if let Some(kept) = self.answers.remove(key) {
            self.order.remove(&kept.seq);
            self.bytes -= key.size() + kept.answer.len();
        }
    }
}

/// The answers a [`ServeStaleLayer`] keeps, shared by every service it wraps.
#[derive(Debug, Default)]
pub struct StaleCache {
    policy: StalePolicy,
    store: Mutex<Store>,
    served: AtomicU64,
}

impl StaleCache {
    /// How many stale answers were served.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// How many bytes of answers (and their keys) are kept.
    pub fn bytes(&self) -> usize {
        self.store.lock().expect("stale").bytes
    }

    fn keep(&self, call: &RawCall, answer: &[u8]) {
        self.store.lock().expect("stale").keep(Key::of(call), answer.to_vec(), self.policy.max_bytes);
    }

    fn fallback(&self, key: &Key) -> Option<(Vec<u8>, Stale)> {
        let store = self.store.lock().expect("stale");
        let kept = store.answers.get(key)?;
        let age = kept.at.elapsed();
        (age <= self.policy.max_age).then(|| (kept.answer.clone(), Stale { age }))
    }
}

/// Serves kept answers when calls fail.
#[derive(Clone, Debug)]
pub struct ServeStaleLayer {
    cache: Arc<StaleCache>,
}

impl ServeStaleLayer {
    pub fn new(policy: StalePolicy) -> Self {
        ServeStaleLayer { cache: Arc::new(StaleCache { policy, ..StaleCache::default() }) }
    }

    pub fn cache(&self) -> Arc<StaleCache> {
        self.cache.clone()
    }
}

impl<S> Layer<S> for ServeStaleLayer {
    type Service = ServeStale<S>;

    fn layer(&self, inner: S) -> ServeStale<S> {
        ServeStale { inner, cache: self.cache.clone() }
    }
}

/// A service whose idempotent answers are kept and served, marked stale, when it fails.
#[derive(Clone, Debug)]
pub struct ServeStale<S> {
    inner: S,
    cache: Arc<StaleCache>,
}

impl<S> Service<RawCall> for ServeStale<S>
where
    S: Service<RawCall, Response = Vec<u8>, Error = Failure>,
    S::Future: Send + 'static,
{
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = warren_rpc::client::CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        if !call.idempotent {
            return Box::pin(self.inner.call(call));
        }
        let key = Key::of(&call);
        let answer = self.inner.call(call.clone());
        let cache = self.cache.clone();
        Box::pin(async move {
            match answer.await {
                Ok(answer) => {
                    cache.keep(&call, &answer);
                    Ok(answer)
                }
                Err(failure) if is_server_failure(&failure) => match cache.fallback(&key) {
                    Some((answer, stale)) => {
                        cache.served.fetch_add(1, Ordering::Relaxed);
                        let _ = SEEN.try_with(|seen| *seen.lock().expect("stale") = Some(stale));
                        Ok(answer)
                    }
                    None => Err(failure),
                },
                Err(failure) => Err(failure),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[u8]) -> RawCall {
        RawCall {
            object: "o".into(),
            interface: "I".into(),
            version: 1,
            method: "m".into(),
            args: args.to_vec(),
            json: false,
            timeout: None,
            idempotent: true,
        }
    }

    #[test]
    fn the_cache_stays_within_its_bytes_dropping_the_oldest() {
        let mut store = Store::default();
        let size = Key::of(&call(b"0")).size() + 100;
        for i in 0..10u8 {
            store.keep(Key::of(&call(&[i])), vec![0; 100], size * 3);
        }
        assert_eq!((store.answers.len(), store.bytes), (3, size * 3));
        assert!(store.answers.contains_key(&Key::of(&call(&[9]))));
        assert!(!store.answers.contains_key(&Key::of(&call(&[6]))), "the oldest went first");
        store.keep(Key::of(&call(b"big")), vec![0; size * 4], size * 3);
        assert_eq!(store.answers.len(), 3, "an answer larger than the cache is not kept");
    }
}
