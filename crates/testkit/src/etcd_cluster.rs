//! A throwaway three-member etcd cluster on the caller's loopback, for tests that kill and
//! restart members: each member has its own data directory and ports, is started with the raft
//! timing the test asks for, and can be killed (SIGKILL) and started again on the same data.
//! Meant to run in a network namespace of the test's own ([`crate::netns`]).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// Members of the cluster: the smallest that keeps a quorum with one member down.
pub const MEMBERS: usize = 3;

/// etcd's raft timing (`--heartbeat-interval`, `--election-timeout`). etcd's defaults are
/// 100 ms and 1 s; tests set both smaller so that an election is over sooner.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election: Duration,
}

/// One member: how to start it, and its process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

/// A running three-member etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    timing: RaftTiming,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts the three members (`etcd` from PATH, Debian's `etcd-server`) with their data under
    /// a fresh directory in the system's temp directory; they elect a leader on their own.
    pub fn start(tag: &str, timing: RaftTiming) -> std::io::Result<EtcdCluster> {
        let token = format!("warren-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("warren-etcd-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut members = Vec::with_capacity(MEMBERS);
        for i in 0..MEMBERS {
            let (client, peer) = (free_port()?, free_port()?);
            members.push(Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                child: None,
            });
        }
        let mut cluster = EtcdCluster { dir, token, timing, members };
        for i in 0..MEMBERS {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The `--store` URL naming all three members, with a key prefix.
    pub fn store_url(&self, prefix: &str) -> String {
        let hosts: Vec<&str> = self.members.iter().map(|m| m.client_url.trim_start_matches("http://")).collect();
        format!("etcd://{}{prefix}", hosts.join(","))
    }

    /// Kills member `i` with SIGKILL (no goodbye to its peers), and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` (again) on its data directory; a restarted member rejoins from its
    /// write-ahead log. Its log goes to `m<i>.log` beside the data, for a test that fails.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        let initial: Vec<String> = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let member = &self.members[i];
        let data = self.dir.join(&member.name);
        let log = File::create(self.dir.join(format!("{}.log", member.name)))?;
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir", &data.to_string_lossy()])
            .args(["--listen-client-urls", &member.client_url, "--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url, "--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", &self.token])
            // Ignored once the data directory exists, as it does on a restart.
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", &self.timing.heartbeat.as_millis().to_string()])
            .args(["--election-timeout", &self.timing.election.as_millis().to_string()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Whether member `i` runs (was not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..MEMBERS {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("etcd cluster: members' logs and data kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
