//! The host's key-value buckets, which agents reach through the `kv` capability. Everything is
//! bounded: key and value sizes, and entries per bucket, so an agent cannot grow the host.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::binding::{Attachment, Bind, Entries, KvAt, Reference, Resource};
use crate::reference::{self, Answer, Call};

/// Bounds on the key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub key: usize,
    /// Longest value, in bytes.
    pub value: usize,
    /// Entries per bucket.
    pub entries: usize,
}

impl Default for KvLimits {
    /// 256-byte keys, 64 KiB values, 1,024 entries per bucket.
    fn default() -> KvLimits {
        KvLimits { key: 256, value: 64 << 10, entries: 1024 }
    }
}

/// Why a write was refused; the guest sees [`KvRefusal::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KvRefusal {
    /// The key or the value is longer than allowed.
    #[error("key or value too long")]
    TooLong,
    /// The bucket holds its maximum of entries and this key is new.
    #[error("bucket full")]
    Full,
}

impl KvRefusal {
    /// What `kv_put` returns to the guest for it.
    pub fn code(self) -> i32 {
        match self {
            KvRefusal::TooLong => -1,
            KvRefusal::Full => -2,
        }
    }
}

type Bucket = BTreeMap<Vec<u8>, Vec<u8>>;

/// Named buckets, shared by every agent granted them; cloning shares the store.
#[derive(Debug, Clone, Default)]
pub struct Kv {
    limits: KvLimits,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl Kv {
    /// An empty store with `limits`.
    pub fn new(limits: KvLimits) -> Kv {
        Kv { limits, buckets: Arc::default() }
    }

    /// The bounds it enforces.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// The value of `key` in `bucket`.
    pub fn get(&self, bucket: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.with(|buckets| buckets.get(bucket)?.get(key).cloned())
    }

    /// Sets `key` in `bucket` to `value`.
    pub fn put(&self, bucket: &str, key: &[u8], value: &[u8]) -> Result<(), KvRefusal> {
        if key.len() > self.limits.key || value.len() > self.limits.value {
            return Err(KvRefusal::TooLong);
        }
        self.with(|buckets| {
            let entries = buckets.entry(bucket.to_owned()).or_default();
            if entries.len() >= self.limits.entries && !entries.contains_key(key) {
                return Err(KvRefusal::Full);
            }
            entries.insert(key.to_vec(), value.to_vec());
            Ok(())
        })
    }

    /// Removes `key` from `bucket`; whether it was there.
    pub fn delete(&self, bucket: &str, key: &[u8]) -> bool {
        self.with(|buckets| buckets.get_mut(bucket).is_some_and(|entries| entries.remove(key).is_some()))
    }

    /// Every entry of `bucket`, in key order.
    pub fn entries(&self, bucket: &str) -> Entries {
        self.with(|buckets| buckets.get(bucket).map(|b| b.clone().into_iter().collect()).unwrap_or_default())
    }

    /// Fills the empty (or absent) `bucket` with `entries`, held to this store's limits: a
    /// moved bucket does not overwrite one that holds anything.
    pub fn install(&self, bucket: &str, entries: &Entries) -> Result<(), String> {
        self.fits(entries)?;
        self.with(|buckets| {
            let target = buckets.entry(bucket.to_owned()).or_default();
            if !target.is_empty() {
                return Err(format!(
                    "the bucket {bucket:?} here is not empty, and a moved bucket does not overwrite one"
                ));
            }
            target.extend(entries.iter().cloned());
            Ok(())
        })
    }

    /// Whether `bucket` holds no entry.
    pub fn is_empty(&self, bucket: &str) -> bool {
        self.with(|buckets| buckets.get(bucket).is_none_or(BTreeMap::is_empty))
    }

    /// Empties `bucket`: it moved away.
    pub fn clear(&self, bucket: &str) {
        self.with(|buckets| buckets.remove(bucket));
    }

    /// Whether `entries` keep within this store's limits.
    pub fn fits(&self, entries: &Entries) -> Result<(), String> {
        let limits = self.limits;
        if entries.len() > limits.entries {
            return Err(format!("{} entries, over this host's {} per bucket", entries.len(), limits.entries));
        }
        if entries.iter().any(|(key, value)| key.len() > limits.key || value.len() > limits.value) {
            return Err("an entry over this host's key or value limit".into());
        }
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Bucket>) -> T) -> T {
        // A panic while holding the lock cannot leave a bucket half-written (each change is one
        // map call), so a poisoned lock is still consistent.
        f(&mut self.buckets.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Where an agent's bucket is while it runs.
#[derive(Debug)]
pub(crate) enum KvStore {
    /// The host's bucket of that name.
    Host(Kv),
    /// The agent's own copy, a store of its own.
    Own(Kv),
    /// The origin's bucket, through a global reference.
    Remote(Reference),
}

/// An agent's bucket: where it is, how the agent is bound to it, and what it may do.
#[derive(Debug)]
pub(crate) struct KvHeld {
    pub(crate) store: KvStore,
    pub(crate) bucket: String,
    pub(crate) write: bool,
    pub(crate) bind: Bind,
    pub(crate) attachment: Attachment,
}

impl KvHeld {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match &self.store {
            KvStore::Host(kv) | KvStore::Own(kv) => Ok(kv.get(&self.bucket, key)),
            KvStore::Remote(at) => match reference::call(at, Call::KvGet(key.to_vec()))? {
                Answer::Value(value) => Ok(value),
                other => Err(reference::unexpected(at, &other)),
            },
        }
    }

    /// 0, or the refusal's code (as `kv_put` returns it).
    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> Result<i32, String> {
        match &self.store {
            KvStore::Host(kv) | KvStore::Own(kv) => {
                Ok(kv.put(&self.bucket, key, value).map_or_else(|refusal| refusal.code(), |()| 0))
            }
            KvStore::Remote(at) => match reference::call(at, Call::KvPut(key.to_vec(), value.to_vec()))? {
                Answer::Code(code) => Ok(code),
                other => Err(reference::unexpected(at, &other)),
            },
        }
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<bool, String> {
        match &self.store {
            KvStore::Host(kv) | KvStore::Own(kv) => Ok(kv.delete(&self.bucket, key)),
            KvStore::Remote(at) => match reference::call(at, Call::KvDelete(key.to_vec()))? {
                Answer::Code(code) => Ok(code == 1),
                other => Err(reference::unexpected(at, &other)),
            },
        }
    }

    /// Its entry in the snapshot's resource table: held where it is now.
    pub(crate) fn resource(&self) -> Resource {
        let at = match &self.store {
            KvStore::Host(_) => KvAt::Here,
            KvStore::Own(kv) => KvAt::Own(kv.entries(&self.bucket)),
            KvStore::Remote(at) => KvAt::Remote(at.clone()),
        };
        Resource::Kv {
            bucket: self.bucket.clone(),
            write: self.write,
            bind: self.bind,
            attachment: self.attachment,
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_separate_and_bounded() {
        let kv = Kv::new(KvLimits { key: 4, value: 4, entries: 2 });
        kv.put("a", b"k1", b"v1").unwrap();
        assert_eq!(kv.get("a", b"k1"), Some(b"v1".to_vec()));
        assert_eq!(kv.get("b", b"k1"), None);
        assert_eq!(kv.put("a", b"k1234", b"v"), Err(KvRefusal::TooLong));
        assert_eq!(kv.put("a", b"k", b"v1234"), Err(KvRefusal::TooLong));
        kv.put("a", b"k2", b"v2").unwrap();
        assert_eq!(kv.put("a", b"k3", b"v3"), Err(KvRefusal::Full));
        kv.put("a", b"k2", b"v2'").unwrap();
        assert!(kv.delete("a", b"k2"));
        assert!(!kv.delete("a", b"k2"));
        kv.put("a", b"k3", b"v3").unwrap();
    }
}
