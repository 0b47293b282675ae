//! A throwaway one-node etcd on loopback, for tests and benches: fresh data directory, client
//! and peer ports the kernel just handed out, killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::free_port;

/// A running single-node etcd.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`, its client URL.
    pub url: String,
}

impl LocalEtcd {
    /// The command that starts etcd (`etcd`, Debian's `etcd-server`) with its data in `dir`,
    /// and the client URL it will serve; callers may add to the command (CPU pinning) first.
    pub fn command(etcd: &Path, dir: &Path) -> std::io::Result<(Command, String)> {
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(etcd);
        cmd.args(["--name", "local", "--data-dir", &dir.to_string_lossy()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("local={peer_url}"), "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok((cmd, url))
    }

    /// Spawns a command from [`LocalEtcd::command`]; `dir` is removed when the result drops.
    pub fn spawn(mut cmd: Command, url: String, dir: &Path) -> std::io::Result<LocalEtcd> {
        let _ = std::fs::remove_dir_all(dir);
        let child = cmd.spawn()?;
        Ok(LocalEtcd { child, dir: dir.to_owned(), url })
    }

    /// `etcd` from PATH with its data in a fresh directory under the system's temp directory.
    pub fn start(tag: &str) -> std::io::Result<LocalEtcd> {
        let dir = std::env::temp_dir().join(format!("warren-etcd-{tag}-{}", std::process::id()));
        let (cmd, url) = LocalEtcd::command(Path::new("etcd"), &dir)?;
        LocalEtcd::spawn(cmd, url, &dir)
    }

    /// The `--store` URL of this etcd with a key prefix.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("etcd://{}{prefix}", self.url.trim_start_matches("http://"))
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
