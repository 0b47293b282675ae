//! Helpers shared by the crate's integration tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use warren_registry::{Endpoint, Name};
use warren_registry_server::embedded::Embedded;
use warren_registry_server::state::Config;

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warren-registry-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Private, as the store wants its directory.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The store in `dir`, with "admin" as the admin token.
pub fn open(dir: &TempDir) -> Embedded {
    Embedded::open(dir.path(), Config::default(), Some("admin")).unwrap()
}

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

pub fn ep(port: u16) -> Endpoint {
    Endpoint::tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}
