//! The node under soak: `warren up` on a config of the soak's own, in a scratch directory that
//! also holds its registry store and XDG directories, so it touches nothing of the user's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::clients::{IDLE_TIMEOUT, Targets};
use crate::scratch::Scratch;

/// How long the node may take to print every readiness line and register `echo`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the node gets to drain after SIGTERM (its own grace is 5 s for builtins, plus up to
/// 5 s releasing leases) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// `$TMPDIR/warren-bench-soak-PID`, mode 0700, with a small site for the http builtin.
pub fn scratch() -> anyhow::Result<Scratch> {
    let scratch = Scratch::new("soak", 0o700)?;
    let www = scratch.dir.join("www");
    std::fs::create_dir_all(&www).with_context(|| format!("cannot create {}", www.display()))?;
    std::fs::write(www.join("index.html"), "<!doctype html><title>soak</title><p>warren bench soak\n")?;
    let body: Vec<u8> = (0..64 * 1024).map(|i| b"warren-bench-soak\n"[i % 18]).collect();
    std::fs::write(www.join("64k.bin"), body)?;
    Ok(scratch)
}

/// The soak's warren.toml: every service on 127.0.0.1 port 0, no status socket, the registry's
/// store in `dir`, short idle timeouts so that idle clients are closed within the run.
pub fn config(dir: &Path) -> String {
    let idle = IDLE_TIMEOUT.as_secs();
    format!(
        "status = \"off\"\n\
         [[service]]\nname = \"http\"\nbuiltin = \"http\"\nmodel = \"event\"\nroot = \"{www}\"\nport = 0\nidle_timeout = {idle}\n\
         [[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\nidle_timeout = {idle}\n\
         [[service]]\nname = \"chat\"\nbuiltin = \"chat\"\nport = 0\nidle_timeout = {idle}\n\
         [[service]]\nname = \"daytime\"\nbuiltin = \"daytime\"\nport = 0\n\
         [[service]]\nname = \"time\"\nbuiltin = \"time\"\nport = 0\n\
         [[service]]\nname = \"chargen\"\nbuiltin = \"chargen\"\nport = 0\n\
         [[service]]\nname = \"hello\"\nport = 0\nserver = \"/bin/echo\"\nserver_args = [\"hello\"]\n\
         log_on_success = []\nlog_on_failure = []\n\
         [[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\ndata = \"{data}\"\n\
         dns = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n",
        www = dir.join("www").display(),
        data = dir.join("registry").display(),
    )
}

/// `(name, addr)` from a readiness line: `warren: serving NAME (TRANSPORT) under … on ADDR`,
/// or the registry's `warren: serving dns (udp, tcp) on ADDR`.
pub fn parse_ready(line: &str) -> Option<(&str, SocketAddr)> {
    let rest = line.strip_prefix("warren: serving ")?;
    let (name, rest) = rest.split_once(" (")?;
    let addr = rest.rsplit_once(" on ")?.1.trim().parse().ok()?;
    Some((name, addr))
}

/// A running `warren up`, stopped when dropped.
pub struct Node {
    child: Child,
    pub pid: i32,
    pub targets: Targets,
}

impl Node {
    /// Start `exe up` on the soak's config in `dir` and wait for every service.
    pub fn start(exe: &Path, dir: &Path) -> anyhow::Result<Node> {
        let conf = dir.join("warren.toml");
        std::fs::write(&conf, config(dir))?;
        let log = dir.join("node.log");
        let mut command = Command::new(exe);
        command
            .arg("up")
            .arg("-c")
            .arg(&conf)
            .env_remove("WARREN_TOKEN")
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_RUNTIME_DIR", dir)
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {} up", exe.display()))?;
        let pid = child.id() as i32;
        let ready = read_lines(&mut child).and_then(|lines| {
            let targets = wait_ready(&lines, &mut child, &log)?;
            // Keep reading so that the node never blocks on a full pipe.
            std::thread::spawn(move || lines.iter().for_each(drop));
            wait_registered(targets.registry_http)?;
            Ok(targets)
        });
        match ready {
            Ok(targets) => Ok(Node { child, pid, targets }),
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// SIGTERM, then SIGKILL to the group if it has not drained in time. Whether it exited on
    /// its own.
    pub fn stop(&mut self) -> bool {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = self.child.wait();
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The last lines of the node's log, for an error message (the scratch directory goes).
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn read_lines(child: &mut Child) -> anyhow::Result<Receiver<String>> {
    let stdout = child.stdout.take().context("the node's stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
    Ok(rx)
}

/// Read readiness lines until every service the soak uses has printed its own.
fn wait_ready(lines: &Receiver<String>, child: &mut Child, log: &Path) -> anyhow::Result<Targets> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut seen: HashMap<String, SocketAddr> = HashMap::new();
    let wanted = ["http", "echo", "chat", "daytime", "time", "chargen", "hello", "registry", "dns", "registry-http"];
    while !wanted.iter().all(|w| seen.contains_key(*w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let status = child.try_wait()?;
            bail!(
                "warren up did not serve {:?} within {READY_TIMEOUT:?} (exit: {status:?}); its log ends:\n{}",
                wanted.iter().filter(|w| !seen.contains_key(**w)).collect::<Vec<_>>(),
                tail(log)
            );
        };
        if let Some((name, addr)) = parse_ready(&line) {
            seen.insert(name.to_owned(), addr);
        }
    }
    let at = |name: &str| seen[name];
    Ok(Targets {
        http: at("http"),
        echo: at("echo"),
        chat: at("chat"),
        daytime: at("daytime"),
        time: at("time"),
        chargen: at("chargen"),
        exec: at("hello"),
        registry: at("registry"),
        registry_http: at("registry-http"),
        dns: at("dns"),
    })
}

/// Poll the registry's HTTP API until `echo` has registered, so that lookups from the first
/// second on find it.
fn wait_registered(api: SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        let answer = std::net::TcpStream::connect(api).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /v1/names/echo HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        if answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200") && a.contains("\"port\"")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("echo did not appear in the node's registry within {READY_TIMEOUT:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lines_give_name_and_address() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_ready("warren: serving echo (tcp) under event on 127.0.0.1:40123"), Some(("echo", at(40123))));
        assert_eq!(
            parse_ready("warren: serving hello (tcp) under exec nowait /bin/echo on 127.0.0.1:4040"),
            Some(("hello", at(4040)))
        );
        assert_eq!(parse_ready("warren: serving dns (udp, tcp) on 127.0.0.1:5300"), Some(("dns", at(5300))));
        assert_eq!(
            parse_ready("warren: serving registry-http (tcp) on 127.0.0.1:7401"),
            Some(("registry-http", at(7401)))
        );
        assert_eq!(parse_ready("warren: up: 8 services"), None);
        assert_eq!(parse_ready("warren: serving echo (tcp) under event on nowhere"), None);
    }

    #[test]
    fn the_config_keeps_everything_in_the_scratch_directory() {
        let text = config(Path::new("/tmp/soak-x"));
        assert!(text.starts_with("status = \"off\"\n"));
        assert!(text.contains("root = \"/tmp/soak-x/www\"") && text.contains("data = \"/tmp/soak-x/registry\""));
        assert!(!text.contains("bind"), "services keep the loopback default");
        assert_eq!(text.matches("port = 0").count(), 8);
    }
}
