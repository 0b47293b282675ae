//! The benches' scratch directories: `$TMPDIR/warren-bench-NAME-PID`, made afresh (whatever an
//! earlier run of the same pid left is removed first) and removed when dropped.

use std::path::PathBuf;

use anyhow::Context;

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// An empty `$TMPDIR/warren-bench-{name}-PID` with permissions `mode`.
    pub fn new(name: &str, mode: u32) -> anyhow::Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("warren-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
