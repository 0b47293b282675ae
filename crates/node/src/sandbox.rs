//! Opt-in isolation for exec services: a cgroup per child with `memory.max` and `pids.max`,
//! and namespaces (set up by [`crate::spawn`] at clone time). See `docs/sandbox.md`.
//!
//! The child joins its cgroup itself, before `execve`, by writing `0` to a `cgroup.procs`
//! descriptor opened here: no instant exists in which the program runs unconfined. cgroup v2 is
//! used where its controllers are available, else the v1 `memory` and `pids` hierarchies.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Namespaces, Sandbox};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup flavour of this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy, with the memory and pids controllers.
    V2,
    /// The v1 `memory` and `pids` hierarchies.
    V1,
    /// Neither is available (or writable).
    Unavailable,
}

impl Cgroups {
    /// Find out which cgroups this process can create.
    pub fn detect() -> Cgroups {
        let v2 = fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory") && c.split_whitespace().any(|w| w == "pids"));
        if v2 {
            return Cgroups::V2;
        }
        if Path::new(ROOT).join("memory/cgroup.procs").exists() && Path::new(ROOT).join("pids/cgroup.procs").exists() {
            return Cgroups::V1;
        }
        Cgroups::Unavailable
    }
}

/// One child's cgroups, made before it is started and removed when dropped: after the child has
/// exited, or at once when it could not be started (or its cgroups only partly made), so that no
/// failed spawn leaves a cgroup behind.
#[derive(Debug)]
pub struct Prepared {
    /// `cgroup.procs` of each cgroup, open for writing, for the child to join.
    pub procs: Vec<File>,
    /// The namespaces the child gets.
    pub namespaces: Namespaces,
    /// The directories to remove once the child has exited.
    pub dirs: Vec<PathBuf>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// `<pid>-<start>` of this node, the prefix of its leaves: the pid with the process's start time
/// names the node even once the pid is reused, so that [`remove_stale`] never takes a live
/// node's leaf for a dead one's.
fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}-{}", start_time(pid).unwrap_or(0))
    })
}

/// When process `pid` started, in clock ticks after boot (`starttime`, the 22nd field of
/// `/proc/<pid>/stat`); `None` if there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (2nd field) may hold spaces and parentheses: count from its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Make the cgroups for one child of `service`. An error says what is missing, plainly.
pub fn prepare(cgroups: Cgroups, service: &str, sandbox: &Sandbox) -> io::Result<Prepared> {
    let mut prepared = Prepared { procs: Vec::new(), namespaces: sandbox.namespaces, dirs: Vec::new() };
    if sandbox.memory_max.is_none() && sandbox.pids_max.is_none() {
        return Ok(prepared);
    }
    let leaf = format!("warren/{service}/{}-{}", owner(), NEXT.fetch_add(1, Ordering::Relaxed));
    let limits: Vec<(&str, &str, String)> = match cgroups {
        Cgroups::Unavailable => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sandbox: no writable cgroup hierarchy with memory and pids controllers under /sys/fs/cgroup",
            ));
        }
        Cgroups::V2 => {
            enable_v2_controllers(&leaf)?;
            let mut v = Vec::new();
            if let Some(max) = sandbox.memory_max {
                v.push(("", "memory.max", max.to_string()));
                v.push(("", "memory.swap.max", "0".to_string()));
            }
            if let Some(max) = sandbox.pids_max {
                v.push(("", "pids.max", max.to_string()));
            }
            v
        }
        Cgroups::V1 => {
            let mut v = Vec::new();
            if let Some(max) = sandbox.memory_max {
                v.push(("memory", "memory.limit_in_bytes", max.to_string()));
            }
            if let Some(max) = sandbox.pids_max {
                v.push(("pids", "pids.max", max.to_string()));
            }
            v
        }
    };
    for (hierarchy, file, value) in limits {
        let dir = Path::new(ROOT).join(hierarchy).join(&leaf);
        if !prepared.dirs.contains(&dir) {
            fs::create_dir_all(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("sandbox: {}: {e}", dir.display())))?;
            prepared.procs.push(OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?);
            prepared.dirs.push(dir.clone());
        }
        fs::write(dir.join(file), value).map_err(|e| io::Error::new(e.kind(), format!("sandbox: {file}: {e}")))?;
    }
    Ok(prepared)
}

/// Enable the memory and pids controllers for the children of every directory above `leaf`.
fn enable_v2_controllers(leaf: &str) -> io::Result<()> {
    let mut dir = PathBuf::from(ROOT);
    for part in Path::new(leaf).parent().into_iter().flat_map(|p| p.components()) {
        fs::write(dir.join("cgroup.subtree_control"), "+memory +pids")?;
        dir.push(part);
        fs::create_dir_all(&dir)?;
    }
    fs::write(dir.join("cgroup.subtree_control"), "+memory +pids")
}

impl Drop for Prepared {
    /// Remove the cgroups (empty once the child has exited, or never joined).
    fn drop(&mut self) {
        // Descriptors into a cgroup do not keep it busy, but close them first all the same.
        self.procs.clear();
        for dir in &self.dirs {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), "sandbox: cannot remove cgroup: {e}");
            }
        }
    }
}

/// Remove the leaves that nodes no longer running left behind (a node killed with SIGKILL never
/// drops its children's cgroups). Called when a node starts. A leaf of a node that still runs is
/// left alone, and so is a stale leaf still busy (a process of the old child lives on in it: a
/// daemon it started, say): `rmdir` refuses it, and the log says so.
pub fn remove_stale(cgroups: Cgroups) {
    let hierarchies: &[&str] = match cgroups {
        Cgroups::V2 => &[""],
        Cgroups::V1 => &["memory", "pids"],
        Cgroups::Unavailable => return,
    };
    for hierarchy in hierarchies {
        let Ok(services) = fs::read_dir(Path::new(ROOT).join(hierarchy).join("warren")) else { continue };
        for leaf in services.flatten().filter_map(|s| fs::read_dir(s.path()).ok()).flatten().flatten() {
            if !leaf.file_type().is_ok_and(|t| t.is_dir()) || !is_stale(&leaf.file_name().to_string_lossy()) {
                continue;
            }
            let dir = leaf.path();
            match fs::remove_dir(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "sandbox: removed the cgroup of a node no longer running")
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "sandbox: cannot remove a stale cgroup: {e}"),
            }
        }
    }
}

/// Whether leaf `name` (`<pid>-<start>-<n>`) was made by a node that no longer runs. The
/// `<pid>-<n>` of earlier versions is stale once no process has that pid (a reused pid keeps
/// it until a later start). Names of another form are not the node's and never stale.
fn is_stale(name: &str) -> bool {
    let numbers: Option<Vec<u64>> = name.split('-').map(|p| p.parse().ok()).collect();
    match numbers.as_deref() {
        Some(&[pid, start, _]) => u32::try_from(pid).is_ok_and(|pid| start_time(pid) != Some(start)),
        Some(&[pid, _]) => u32::try_from(pid).is_ok_and(|pid| start_time(pid).is_none()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_stale_once_its_node_is_gone_or_its_pid_reused() {
        let me = std::process::id();
        let start = start_time(me).expect("this process has a start time");
        assert!(!is_stale(&format!("{me}-{start}-7")), "this node's own leaf");
        assert!(is_stale(&format!("{me}-{}-7", start + 1)), "the same pid, another process");
        assert!(is_stale(&format!("{}-{start}-1", u32::MAX)), "no such process");
        assert!(is_stale(&format!("{}-3", u32::MAX)), "an earlier version's leaf, its node gone");
        assert!(!is_stale(&format!("{me}-3")), "an earlier version's leaf, its pid alive");
        for other in ["", "cgroup.procs", "x-1-2", "1-2-3-4", "1-2-y", "memory"] {
            assert!(!is_stale(other), "{other:?} is not a leaf of the node");
        }
        assert!(owner().starts_with(&format!("{me}-{start}")));
    }
}
