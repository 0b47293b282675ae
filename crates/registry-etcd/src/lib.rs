//! The registry kept in etcd: `warren registry --store etcd://host:port[,host:port…][/prefix]`.
//!
//! Several registry instances pointed at one etcd cluster serve the same names: the state lives
//! only in etcd, so an instance holds nothing that another would miss. The mapping is direct:
//!
//! - an endpoint is one key (see [`keys`]); a name is bound while it has one; the key holds the
//!   name case-folded, the value the name as first spelt, which writes to a bound name keep;
//! - a registry lease is an etcd lease, its endpoint key attached to it, so etcd itself removes
//!   the endpoint when the lease lapses (its lessor checks every 500 ms; etcd grants at least
//!   its minimum TTL, 2 s with default settings, so a 1 s request is granted 2 s). Its id is
//!   drawn at random (63 bits, etcd's id space) rather than left to etcd's sequence, and a key
//!   attached to it names the token that registered it, which renewals and releases must show;
//! - tokens are kept as HMACs under a key kept in etcd ([`keys`]), made by the first instance;
//! - a registry revision is etcd's revision, so `watch` is an etcd watch from that revision with
//!   the previous value attached (a delete event carries the endpoint it removed), and a
//!   compacted revision answers [`Error::Compacted`] as the embedded store does;
//! - every write is one etcd transaction guarded by the name's keys' `mod_revision`, read just
//!   before: a concurrent writer makes the guard fail and the write is retried on fresh data,
//!   so owner checks and the endpoint bound hold across instances without a lock.
//!
//! The DNS front end reads [`Backend::snapshot`], which must not wait: each instance keeps a
//! copy of the names, loaded once and then kept current by a watch of its own ([`cache`]).

pub mod cache;
pub mod keys;
mod leases;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use warren_registry::backend::{Backend, Lease, Watch};
use warren_registry::model::{
    Endpoint, EndpointKey, Entry, Error, LeaseId, MAX_TTL, MIN_TTL, Name, Revision, TokenHash, TokenKey,
    check_endpoints, fold_prefix,
};

use crate::keys::{Keys, Stored};

/// How long `connect` keeps trying an etcd that does not answer yet.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(15);

/// How often a write whose guard failed (another writer got there first) is tried again.
const WRITE_ATTEMPTS: usize = 16;

/// Where the registry lives in etcd and the bounds it enforces.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` client URLs of the etcd cluster.
    pub endpoints: Vec<String>,
    /// The key prefix all of this registry's keys sit under.
    pub prefix: String,
    /// The admin token: it may change or remove any name and lease.
    pub admin: Option<String>,
    /// Most endpoints under one name.
    pub max_endpoints: usize,
}

impl EtcdConfig {
    /// Parses `etcd://host:port[,host:port…][/prefix]` (prefix default `/warren/`).
    pub fn from_url(url: &str) -> Result<EtcdConfig, Error> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| Error::Invalid(format!("{url}: an etcd store is etcd://host:port[,host:port…][/prefix]")))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/warren/"),
        };
        let endpoints: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("http://{h}")).collect();
        if endpoints.is_empty() {
            return Err(Error::Invalid(format!("{url}: no etcd host given")));
        }
        Ok(EtcdConfig { endpoints, prefix: prefix.to_owned(), admin: None, max_endpoints: 64 })
    }
}

/// The etcd backend. Cheap to share: the client multiplexes calls over one HTTP/2 connection.
pub struct Etcd {
    client: Client,
    keys: Keys,
    config: EtcdConfig,
    token_key: TokenKey,
    admin: Option<TokenHash>,
    cache: Arc<cache::Cache>,
    keepers: leases::Keepers,
    follower: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("endpoints", &self.config.endpoints).field("prefix", &self.keys).finish()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Etcd {
    /// Connects, loads the names into the local copy and starts following changes. An etcd that
    /// is still starting (refusing connections, electing itself) is retried for up to
    /// [`CONNECT_PATIENCE`], so that a registry started beside it at boot comes up.
    pub async fn connect(config: EtcdConfig) -> Result<Etcd, Error> {
        let keys = Keys::new(&config.prefix);
        let cache = Arc::new(cache::Cache::default());
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        let (client, loaded) = loop {
            let attempt = async {
                let client = Client::connect(&config.endpoints, None).await.map_err(unavailable)?;
                let loaded = cache::load(&mut client.clone(), &keys, &cache).await?;
                Ok::<_, Error>((client, loaded))
            };
            match attempt.await {
                Ok(connected) => break connected,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let token_key = token_key(&client, &keys).await?;
        let admin = config.admin.as_deref().map(|t| token_key.hash(t)).transpose()?;
        let follower = tokio::spawn(cache::follow(client.clone(), keys.clone(), cache.clone(), loaded));
        let keepers = leases::Keepers::new(client.clone());
        Ok(Etcd { keepers, client, keys, config, token_key, admin, cache, follower })
    }

    /// Whether `token` registered `lease` (or is the admin's): `LeaseNotFound` if it lapsed or
    /// never was, `Forbidden` for another token.
    async fn lease_of(&self, lease: LeaseId, token: &str) -> Result<(), Error> {
        let caller = self.token_key.hash(token)?;
        let got = self.client.clone().get(self.keys.lease(lease), None).await.map_err(unavailable)?;
        let kv = got.kvs().first().ok_or(Error::LeaseNotFound(lease))?;
        let holder: String = serde_json::from_slice(kv.value()).map_err(|_| Error::LeaseNotFound(lease))?;
        if holder != keys::hex(&caller) && self.admin != Some(caller) {
            return Err(Error::Forbidden(format!("lease {lease}")));
        }
        Ok(())
    }

    /// The name's endpoint records and the revision they were read at.
    async fn read(&self, name: &Name) -> Result<(i64, Vec<(Stored, i64)>), Error> {
        let options = GetOptions::new().with_prefix();
        let got = self.client.clone().get(self.keys.name(name), Some(options)).await.map_err(unavailable)?;
        let revision = got.header().map_or(0, |h| h.revision());
        let records =
            got.kvs().iter().map(|kv| Ok((Stored::decode(kv.value())?, kv.lease()))).collect::<Result<_, _>>()?;
        Ok((revision, records))
    }

    /// The name as its keys spell it if it is bound (its first spelling), else as given.
    fn spelt(name: &Name, records: &[(Stored, i64)]) -> Result<Name, Error> {
        records.first().map_or_else(|| Ok(name.clone()), |(r, _)| r.name_under(name.key()))
    }

    /// The owner a write keeps: the name's if it is bound (after checking the caller may write
    /// it), the caller's if it is free.
    fn authorize(&self, name: &Name, records: &[(Stored, i64)], caller: &TokenHash) -> Result<String, Error> {
        let Some((first, _)) = records.first() else { return Ok(keys::hex(caller)) };
        if records.iter().all(|(r, _)| r.owned_by(caller)) || self.admin.as_ref() == Some(caller) {
            Ok(first.owner.clone())
        } else {
            Err(Error::Forbidden(name.to_string()))
        }
    }

    /// Runs `ops` if no key of `name` changed after `read_at`; `None` if one did (try again).
    async fn guarded(&self, name: &Name, read_at: i64, ops: Vec<TxnOp>) -> Result<Option<Revision>, Error> {
        let guard = Compare::mod_revision(self.keys.name(name), CompareOp::Less, read_at + 1).with_prefix();
        let txn = Txn::new().when([guard]).and_then(ops);
        let done = self.client.clone().txn(txn).await.map_err(unavailable)?;
        Ok(done.succeeded().then(|| revision_of(done.header())))
    }

    fn put(&self, name: &Name, endpoint: &Endpoint, owner: &str, lease: Option<i64>) -> TxnOp {
        let value = Stored { endpoint: endpoint.clone(), owner: owner.to_owned(), name: Some(name.to_string()) };
        let value = value.encode();
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        TxnOp::put(self.keys.endpoint(name, endpoint), value, options)
    }
}

#[async_trait]
impl Backend for Etcd {
    async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        let owner = keys::hex(&self.token_key.hash(token)?);
        check_endpoints(&endpoints, self.config.max_endpoints)?;
        // Free means no key at all under the name: an empty range compares as created at 0.
        let free = Compare::create_revision(self.keys.name(name), CompareOp::Equal, 0).with_prefix();
        let puts: Vec<TxnOp> = endpoints.iter().map(|e| self.put(name, e, &owner, None)).collect();
        // If it is taken, one of its keys says how the name is spelt.
        let one = TxnOp::get(self.keys.name(name), Some(GetOptions::new().with_prefix().with_limit(1)));
        let txn = Txn::new().when([free]).and_then(puts).or_else([one]);
        let done = self.client.clone().txn(txn).await.map_err(unavailable)?;
        if !done.succeeded() {
            let kv = done.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(got) => got.kvs().first().cloned(),
                _ => None,
            });
            let spelt = match kv {
                Some(kv) => self.keys.name_of(kv.key(), &Stored::decode(kv.value())?)?,
                None => name.clone(),
            };
            return Err(Error::AlreadyBound(spelt));
        }
        Ok(revision_of(done.header()))
    }

    async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        let caller = self.token_key.hash(token)?;
        check_endpoints(&endpoints, self.config.max_endpoints)?;
        for _ in 0..WRITE_ATTEMPTS {
            let (read_at, records) = self.read(name).await?;
            let name = &Etcd::spelt(name, &records)?;
            let owner = self.authorize(name, &records, &caller)?;
            let keep: BTreeSet<EndpointKey> = endpoints.iter().map(Endpoint::key).collect();
            let mut ops: Vec<TxnOp> = records
                .iter()
                .filter(|(r, _)| !keep.contains(&r.endpoint.key()))
                .map(|(r, _)| TxnOp::delete(self.keys.endpoint(name, &r.endpoint), None))
                .collect();
            // Rewrite only what changes: a new endpoint, new weight or metadata, or a leased one
            // that becomes static.
            let unchanged = |e: &Endpoint| records.iter().any(|(r, lease)| r.endpoint == *e && *lease == 0);
            ops.extend(endpoints.iter().filter(|e| !unchanged(e)).map(|e| self.put(name, e, &owner, None)));
            if ops.is_empty() {
                return Ok(Revision(read_at as u64));
            }
            if let Some(revision) = self.guarded(name, read_at, ops).await? {
                return Ok(revision);
            }
        }
        Err(contended(name))
    }

    async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error> {
        let caller = self.token_key.hash(token)?;
        for _ in 0..WRITE_ATTEMPTS {
            let (read_at, records) = self.read(name).await?;
            if records.is_empty() {
                return Err(Error::NotBound(name.clone()));
            }
            self.authorize(name, &records, &caller)?;
            let delete = TxnOp::delete(self.keys.name(name), Some(DeleteOptions::new().with_prefix()));
            if let Some(revision) = self.guarded(name, read_at, vec![delete]).await? {
                return Ok(revision);
            }
        }
        Err(contended(name))
    }

    async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        let (read_at, records) = self.read(name).await?;
        if records.is_empty() {
            return Err(Error::NotBound(name.clone()));
        }
        let name = Etcd::spelt(name, &records)?;
        Ok((
            Revision(read_at as u64),
            Entry { name, endpoints: records.into_iter().map(|(r, _)| r.endpoint).collect() },
        ))
    }

    async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        let prefix = fold_prefix(prefix)?;
        let options = GetOptions::new().with_prefix();
        let got =
            self.client.clone().get(self.keys.names_with_prefix(&prefix), Some(options)).await.map_err(unavailable)?;
        // Keys sort `foo.bar/…` before `foo/…`; names sort `foo` first. Group, then order by name.
        let mut names: BTreeMap<Name, Vec<Endpoint>> = BTreeMap::new();
        for kv in got.kvs() {
            let stored = Stored::decode(kv.value())?;
            names.entry(self.keys.name_of(kv.key(), &stored)?).or_default().push(stored.endpoint);
        }
        let entries = names.into_iter().map(|(name, endpoints)| Entry { name, endpoints }).collect();
        Ok((revision_of(got.header()), entries))
    }

    async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error> {
        let caller = self.token_key.hash(token)?;
        endpoint.validate()?;
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::Invalid(format!("ttl {ttl:?}: must be {MIN_TTL:?} to {MAX_TTL:?}")));
        }
        let (id, granted) = self.keepers.grant(ttl).await?;
        let written = self.register_under(name, &caller, &endpoint, id).await;
        match written {
            Ok(revision) => Ok(Lease { id: lease_id(id), ttl: granted, revision }),
            Err(e) => {
                // Nothing is attached to it; do not leave it to run out.
                let _ = self.client.clone().lease_revoke(id).await;
                Err(e)
            }
        }
    }

    async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error> {
        self.lease_of(lease, token).await?;
        self.keepers.renew(lease).await
    }

    async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error> {
        self.lease_of(lease, token).await?;
        self.keepers.revoke(lease).await
    }

    async fn authorize(&self, name: &Name, token: &str) -> Result<(), Error> {
        let caller = self.token_key.hash(token)?;
        let (_, records) = self.read(name).await?;
        if records.is_empty() {
            return Err(Error::NotBound(name.clone()));
        }
        Etcd::authorize(self, name, &records, &caller).map(drop)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn Watch>, Error> {
        let prefix = fold_prefix(prefix)?;
        let watch = watch::EtcdWatch::start(self.client.clone(), self.keys.clone(), &prefix, from).await?;
        Ok(Box::new(watch))
    }

    fn snapshot(&self, name: &Name) -> Option<Vec<Endpoint>> {
        self.cache.get(name)
    }

    fn snapshot_generation(&self) -> Option<u64> {
        Some(self.cache.generation())
    }
}

impl Etcd {
    async fn register_under(
        &self,
        name: &Name,
        caller: &TokenHash,
        e: &Endpoint,
        lease: i64,
    ) -> Result<Revision, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let (read_at, records) = self.read(name).await?;
            let name = &Etcd::spelt(name, &records)?;
            let owner = self.authorize(name, &records, caller)?;
            let present = records.iter().any(|(r, _)| r.endpoint.key() == e.key());
            if !present && records.len() >= self.config.max_endpoints {
                return Err(Error::TooLarge(format!("{name}: at most {} endpoints", self.config.max_endpoints)));
            }
            // Who registered the lease goes with it, for its renewals and release.
            let holder = serde_json::to_vec(&keys::hex(caller)).expect("a string serialises");
            let record =
                TxnOp::put(self.keys.lease(lease_id(lease)), holder, Some(PutOptions::new().with_lease(lease)));
            let ops = vec![self.put(name, e, &owner, Some(lease)), record];
            if let Some(revision) = self.guarded(name, read_at, ops).await? {
                return Ok(revision);
            }
        }
        Err(contended(name))
    }
}

/// A registry lease id for an etcd lease id (always positive).
fn lease_id(id: i64) -> LeaseId {
    LeaseId(u128::from(id.unsigned_abs()))
}

/// The etcd lease id of a registry lease id; ids etcd cannot hold name no lease.
fn etcd_id(lease: LeaseId) -> Result<i64, Error> {
    i64::try_from(lease.0).map_err(|_| Error::LeaseNotFound(lease))
}

/// The registry's token key in etcd: read, or written by whichever instance comes first.
async fn token_key(client: &Client, keys: &Keys) -> Result<TokenKey, Error> {
    let key = keys.token_key();
    let fresh = TokenKey::random()?;
    let absent = Compare::create_revision(key.clone(), CompareOp::Equal, 0);
    let write = TxnOp::put(key.clone(), keys::hex(fresh.bytes()), None);
    let read = TxnOp::get(key.clone(), None);
    let done = client.clone().txn(Txn::new().when([absent]).and_then([write]).or_else([read])).await;
    let done = done.map_err(unavailable)?;
    if done.succeeded() {
        return Ok(fresh);
    }
    let stored = done.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(got) => got.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    let not_a_key = || Error::Unavailable(format!("etcd holds {key}, which is not a token key"));
    let bytes = stored.as_deref().and_then(keys::unhex).ok_or_else(not_a_key)?;
    let bytes: [u8; TokenKey::LEN] = bytes.try_into().map_err(|_| not_a_key())?;
    Ok(TokenKey::new(bytes))
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    Revision(header.map_or(0, |h| h.revision()).max(0) as u64)
}

fn unavailable(e: etcd_client::Error) -> Error {
    Error::Unavailable(format!("etcd: {e}"))
}

fn contended(name: &Name) -> Error {
    Error::Unavailable(format!("{name}: changed by others {WRITE_ATTEMPTS} times in a row; try again"))
}
