//! The client's cache: copies of files with their version and the end of their lease, kept in
//! a directory so that they outlive the client process.
//!
//! ```text
//! <dir>/identity       the client identity the server handed out: id and key, in hex (0600)
//! <dir>/index.json     { path: { version, lease_until_ms, file } }, rewritten durably
//! <dir>/data/<n>       one file per cached copy
//! ```
//!
//! The policy is pure and takes the time as an argument ([`Cache::lookup`]): a copy is served
//! as it is while `now < lease_until_ms`; after that (or once called back) it must be
//! revalidated with its version before it is served again.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wire::ClientKey;

/// One cached copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub version: u64,
    /// Unix ms; 0 once called back.
    pub lease_until_ms: u64,
    /// The data file's name under `data/`.
    pub file: String,
}

/// What the cache holds for a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A copy under a live lease: serve it.
    Fresh(PathBuf),
    /// A copy whose lease ended or was called back: revalidate this version first.
    Stale {
        version: u64,
    },
    Missing,
}

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    identity: Option<(u64, ClientKey)>,
    index: BTreeMap<String, Cached>,
}

impl Cache {
    /// Open (or make) the cache in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join("data"))?;
        let id_file = dir.join("identity");
        let identity = match fs::read_to_string(&id_file) {
            Ok(text) => Some(
                parse_identity(&text).ok_or_else(|| io::Error::other(format!("{}: malformed", id_file.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let index = match fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { dir, identity, index })
    }

    /// The identity the server keeps this client's leases under, once it handed one out.
    pub fn identity(&self) -> Option<(u64, ClientKey)> {
        self.identity
    }

    /// Keep a new identity. The callbacks owed to the old one (if any) are lost with it, so no
    /// copy is served again before it is revalidated.
    pub fn set_identity(&mut self, client: u64, key: ClientKey) -> io::Result<()> {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write_durably(&self.dir.join("identity"), format!("{client:016x} {hex}\n").as_bytes())?;
        self.identity = Some((client, key));
        self.index.values_mut().for_each(|c| c.lease_until_ms = 0);
        self.save()
    }

    /// What to do for `path` at `now_ms`.
    pub fn lookup(&self, path: &str, now_ms: u64) -> Lookup {
        match self.index.get(&key(path)) {
            Some(c) if now_ms < c.lease_until_ms => Lookup::Fresh(self.dir.join("data").join(&c.file)),
            Some(c) => Lookup::Stale { version: c.version },
            None => Lookup::Missing,
        }
    }

    /// The server called `path` back: its copy may be stale.
    pub fn invalidate(&mut self, path: &str) -> io::Result<()> {
        match self.index.get_mut(&key(path)) {
            Some(c) if c.lease_until_ms != 0 => {
                c.lease_until_ms = 0;
                self.save()
            }
            _ => Ok(()),
        }
    }

    /// The server said the copy is current: lease it until `lease_until_ms`.
    pub fn renew(&mut self, path: &str, lease_until_ms: u64) -> io::Result<PathBuf> {
        let c = self
            .index
            .get_mut(&key(path))
            .ok_or_else(|| io::Error::other("renewing a copy the cache does not hold"))?;
        c.lease_until_ms = lease_until_ms;
        let file = self.dir.join("data").join(&c.file);
        self.save()?;
        Ok(file)
    }

    /// Keep `data` as `path` at `version`, leased until `lease_until_ms`.
    pub fn store(&mut self, path: &str, version: u64, lease_until_ms: u64, data: &[u8]) -> io::Result<PathBuf> {
        let name = format!("{:016x}", fnv(path.as_bytes()));
        let file = self.dir.join("data").join(&name);
        write_durably(&file, data)?;
        self.index.insert(key(path), Cached { version, lease_until_ms, file: name });
        self.save()?;
        Ok(file)
    }

    fn save(&self) -> io::Result<()> {
        write_durably(&self.dir.join("index.json"), &serde_json::to_vec_pretty(&self.index).map_err(io::Error::other)?)
    }
}

fn parse_identity(text: &str) -> Option<(u64, ClientKey)> {
    let (client, key) = text.trim().split_once(' ')?;
    let client = u64::from_str_radix(client, 16).ok()?;
    if key.len() != 32 || !key.is_ascii() {
        return None;
    }
    let mut out = [0; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&key[2 * i..2 * i + 2], 16).ok()?;
    }
    Some((client, out))
}

/// Paths as the server spells them: `a/b` and `/a/b` are one file.
fn key(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Write a file whole or not at all: a temporary beside it, synced, renamed. Only the owner
/// may read it (the identity file holds a secret).
fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_fresh_until_its_lease_ends_or_it_is_called_back() {
        let dir = std::env::temp_dir().join(format!("warren-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut cache = Cache::open(&dir).unwrap();
        assert_eq!(cache.lookup("/a", 0), Lookup::Missing);
        let file = cache.store("a", 7, 1_000, b"hello").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"hello");
        // A virtual clock: fresh up to the lease's last millisecond, stale from its end.
        assert_eq!(cache.lookup("/a", 999), Lookup::Fresh(file.clone()));
        assert_eq!(cache.lookup("/a", 1_000), Lookup::Stale { version: 7 });
        assert_eq!(cache.renew("/a", 2_000).unwrap(), file);
        assert_eq!(cache.lookup("a", 1_500), Lookup::Fresh(file.clone()));
        cache.invalidate("/a").unwrap();
        assert_eq!(cache.lookup("/a", 1_500), Lookup::Stale { version: 7 }, "called back: revalidate first");

        // The index and the identity outlive the process; a new identity leases nothing.
        cache.renew("/a", 2_000).unwrap();
        assert_eq!(cache.identity(), None);
        cache.set_identity(0xabc, [9; 16]).unwrap();
        assert_eq!(cache.lookup("/a", 1_500), Lookup::Stale { version: 7 });
        let reopened = Cache::open(&dir).unwrap();
        assert_eq!(reopened.identity(), Some((0xabc, [9; 16])));
        assert_eq!(reopened.lookup("/a", 1_500), Lookup::Stale { version: 7 });
        fs::remove_dir_all(&dir).unwrap();
    }
}
