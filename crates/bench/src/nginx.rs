//! The reference server for `warren bench http`: nginx from Debian's package, installed when
//! missing, configured like warren (one worker, access log off, sendfile on), run in the
//! foreground from a scratch directory and always stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

pub use crate::scratch::Scratch;
use crate::server::{NotListening, peer_command, wait_listening};

/// How long nginx may take to accept connections after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a program lives, searching PATH and the sbin directories a non-root PATH may miss.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// nginx and wrk, installed with apt-get if either is missing.
pub fn ensure_tools() -> anyhow::Result<(PathBuf, PathBuf)> {
    let [nginx, wrk] = crate::host::ensure_programs(["nginx", "wrk"], &["nginx-light", "wrk"], "http")?;
    Ok((nginx, wrk))
}

/// `$TMPDIR/warren-bench-http-PID` with `root/1k.bin` and `root/1m.bin`, readable by all
/// (nginx's workers run as `nobody` when the bench runs as root).
pub fn site() -> anyhow::Result<Scratch> {
    let scratch = Scratch::new("http", 0o755)?;
    let root = root(&scratch);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (name, size) in [("1k.bin", 1024), ("1m.bin", 1024 * 1024)] {
        let body: Vec<u8> = (0..size).map(|i| b"warren-bench-http\n"[i % 18]).collect();
        std::fs::write(root.join(name), body)?;
    }
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(scratch)
}

/// The document root inside a [`site`].
pub fn root(scratch: &Scratch) -> PathBuf {
    scratch.dir.join("root")
}

/// The configuration: one worker, no access log (or nginx's `combined` to `dir/access.log`),
/// sendfile, everything inside `dir`.
pub fn config(dir: &Path, root: &Path, port: u16, access_log: bool) -> String {
    let d = dir.display();
    let access_log = if access_log { format!("{d}/access.log combined") } else { "off".into() };
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 20000; }}\nhttp {{\n  access_log {access_log};\n  \
         sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  default_type application/octet-stream;\n  \
         client_body_temp_path {d}/body;\n  server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
        root.display()
    )
}

/// A running nginx master (and its worker), stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    dir: PathBuf,
    stopped: bool,
}

impl Nginx {
    /// Write the configuration into `scratch` and start nginx on `cpu` (with `taskset`).
    pub fn start(nginx: &Path, scratch: &Scratch, cpu: Option<usize>) -> anyhow::Result<Nginx> {
        Self::start_logging(nginx, scratch, cpu, false)
    }

    /// [`Nginx::start`], writing an access log when `access_log`.
    pub fn start_logging(
        nginx: &Path,
        scratch: &Scratch,
        cpu: Option<usize>,
        access_log: bool,
    ) -> anyhow::Result<Nginx> {
        let port = warren_testkit::free_port()?;
        let dir = scratch.dir.clone();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, &root(scratch), port, access_log))?;
        let mut command = peer_command(nginx, cpu);
        command.arg("-p").arg(&dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = command.spawn().with_context(|| format!("cannot start {}", nginx.display()))?;
        let pid = child.id() as i32;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut guard = Nginx { child, pid, addr, dir, stopped: false };
        match wait_listening(&mut guard.child, addr, READY_TIMEOUT) {
            Ok(()) => Ok(guard),
            Err(NotListening::Exited(status)) => {
                guard.stopped = true;
                bail!("nginx exited at start ({status}): {}", guard.errors())
            }
            Err(NotListening::Late) => {
                bail!("nginx did not listen on {addr} within {READY_TIMEOUT:?}: {}", guard.errors())
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The master's pid; its worker is its child.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The version line, for the report.
    pub fn version(nginx: &Path) -> String {
        let out = Command::new(nginx).arg("-v").output();
        out.map(|o| String::from_utf8_lossy(&o.stderr).trim().replace("nginx version: ", "")).unwrap_or_default()
    }

    /// The tail of nginx's error log.
    pub fn errors(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        if lines.is_empty() { "(empty error log)".into() } else { lines.join(" | ") }
    }

    /// SIGQUIT (graceful), then SIGTERM, then SIGKILL to the whole group.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let steps = [(Signal::SIGQUIT, Duration::from_secs(2)), (Signal::SIGTERM, Duration::from_secs(1))];
        crate::server::stop_group(&mut self.child, &steps);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_the_scratch_directory() {
        let conf = config(Path::new("/tmp/x"), Path::new("/tmp/x/root"), 8080, false);
        assert!(conf.contains("listen 127.0.0.1:8080;") && conf.contains("root /tmp/x/root;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;") && conf.contains("access_log off;"));
        assert!(conf.contains("worker_processes 1;") && conf.contains("daemon off;"));
    }

    #[test]
    fn scratch_has_the_files_and_goes_away() {
        let scratch = site().unwrap();
        let dir = scratch.dir.clone();
        assert_eq!(std::fs::metadata(root(&scratch).join("1m.bin")).unwrap().len(), 1 << 20);
        drop(scratch);
        assert!(!dir.exists());
    }
}
