//! The behavioural suite against the embedded store.

mod suite;

use std::time::Duration;

use warren_registry_server::embedded::Embedded;
use warren_registry_server::state::Config;

/// A store in a fresh directory, removed when the guard drops.
async fn make() -> (Embedded, TempDir) {
    let dir = TempDir::new();
    (Embedded::open(&dir.0, Config::default(), Some(suite::ADMIN)).unwrap(), dir)
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warren-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// The embedded store sweeps every 100 ms; the rest is scheduling slack on a busy machine.
behaviour_suite!(make(), Duration::from_millis(1500));
