//! The client's cache: copies of files with their version and the end of their lease, kept in
//! a directory so that they outlive the client process.
//!
//! ```text
//! <dir>/client         this client's id (16 hex digits), made once
//! <dir>/index.json     { path: { version, lease_until_ms, file } }, rewritten durably
//! <dir>/data/<n>       one file per cached copy
//! ```
//!
//! The policy is pure and takes the time as an argument ([`Cache::lookup`]): a copy is served
//! as it is while `now < lease_until_ms`; after that (or once called back) it must be
//! revalidated with its version before it is served again.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    client: u64,
    index: BTreeMap<String, Cached>,
}

impl Cache {
    /// Open (or make) the cache in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join("data"))?;
        let id_file = dir.join("client");
        let client = match fs::read_to_string(&id_file) {
            Ok(text) => u64::from_str_radix(text.trim(), 16)
                .map_err(|e| io::Error::other(format!("{}: {e}", id_file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 8];
                File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                let client = u64::from_le_bytes(bytes).max(1);
                write_durably(&id_file, format!("{client:016x}\n").as_bytes())?;
                client
            }
            Err(e) => return Err(e),
        };
        let index = match fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { dir, client, index })
    }

    /// This client's id, which the server keeps its leases under.
    pub fn client(&self) -> u64 {
        self.client
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

/// Paths as the server spells them: `a/b` and `/a/b` are one file.
fn key(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Write a file whole or not at all: a temporary beside it, synced, renamed.
fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
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

        // The index and the client id outlive the process.
        let client = cache.client();
        let reopened = Cache::open(&dir).unwrap();
        assert_eq!(reopened.client(), client);
        assert_eq!(reopened.lookup("/a", 1_500), Lookup::Stale { version: 7 });
        fs::remove_dir_all(&dir).unwrap();
    }
}
