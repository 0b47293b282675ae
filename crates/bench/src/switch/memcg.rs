//! A memory cgroup per backend of the lard part. The page cache a process fills is charged to
//! its memory cgroup, and a cgroup at its limit reclaims its own least recently used pages: so
//! the limit is the size of that backend's cache, kept by the kernel as it keeps any server's,
//! and a page it dropped is read from the disk again.
//!
//! cgroup v2 (`memory.max`) where the unified hierarchy has the memory controller, else the v1
//! memory hierarchy (`memory.limit_in_bytes`), as the node's sandbox does. Each cgroup is a
//! leaf of `warren-bench/` and is removed when dropped, once its process has gone.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const ROOT: &str = "/sys/fs/cgroup";

/// One memory cgroup with a limit, removed when dropped.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// `warren-bench/NAME` with its memory limited to `limit` bytes.
    pub fn create(name: &str, limit: u64) -> anyhow::Result<MemoryCgroup> {
        let root = Path::new(ROOT);
        let v2 = fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let (parent, limit_file) = if v2 {
            (root.join("warren-bench"), "memory.max")
        } else if root.join("memory/cgroup.procs").exists() {
            (root.join("memory/warren-bench"), "memory.limit_in_bytes")
        } else {
            bail!(
                "no memory cgroup controller under {ROOT} (neither cgroup v2 with `memory` nor the v1 \
                 memory hierarchy): the lard part bounds each backend's page cache with one"
            );
        };
        let needs_root = "the lard part makes memory cgroups, which takes root";
        fs::create_dir_all(&parent).with_context(|| format!("cannot create {}: {needs_root}", parent.display()))?;
        if v2 {
            // The controller must be enabled in every parent for a leaf to have memory.max.
            fs::write(root.join("cgroup.subtree_control"), "+memory")
                .and_then(|()| fs::write(parent.join("cgroup.subtree_control"), "+memory"))
                .with_context(|| format!("cannot enable the memory controller: {needs_root}"))?;
        }
        let dir = parent.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cgroup = MemoryCgroup { dir, v2 };
        fs::write(cgroup.dir.join(limit_file), limit.to_string())
            .with_context(|| format!("cannot set {limit_file} of {}", cgroup.dir.display()))?;
        Ok(cgroup)
    }

    /// Moves process `pid` (all its threads) into the cgroup. Memory it already holds stays
    /// charged where it was; the page cache it reads from now on is charged here.
    pub fn join(&self, pid: i32) -> anyhow::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("cannot move process {pid} into {}", self.dir.display()))
    }

    /// Bytes of page cache charged to the cgroup now (`file` in v2's memory.stat, `cache` in v1's).
    pub fn cached(&self) -> Option<u64> {
        let stat = fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        let key = if self.v2 { "file" } else { "cache" };
        stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Fails while a process is still inside: the owner stops its backend first.
        let _ = fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            // Only succeeds once the last leaf is gone.
            let _ = fs::remove_dir(parent);
        }
    }
}
