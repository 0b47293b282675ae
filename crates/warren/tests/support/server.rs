//! A guard for a running `warren` server: started, read until its readiness line, stopped with
//! a signal and a bounded wait (then SIGKILL of its whole process group).

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Drained, EXIT_BOUND, T, command, drain, force_kill, wait_bounded};

/// A running server. Dropping it stops it: SIGTERM, a bounded wait, then SIGKILL.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub label: String,
    /// The readiness line.
    pub ready: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Drained,
    exited: Option<ExitStatus>,
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Every stdout line after the readiness line.
    pub stdout: Vec<String>,
    pub stderr: String,
    /// From the signal to the exit.
    pub took: Duration,
    /// Processes of the server's group still alive after it exited (a hub or worker left
    /// behind); they are killed once noted.
    pub leftovers: Vec<String>,
}

impl Stopped {
    /// The `warren: stopped...` line, which must be there.
    pub fn stopped_line(&self) -> &str {
        self.stdout
            .iter()
            .rev()
            .find(|l| l.starts_with("warren: stopped"))
            .unwrap_or_else(|| panic!("no stopped line; stdout: {:?}; stderr: {}", self.stdout, self.stderr))
    }

    /// (served, refused) from the stopped line.
    pub fn counts(&self) -> (u64, u64) {
        let line = self.stopped_line();
        let rest = line.split(": ").nth(2).unwrap_or_else(|| panic!("malformed stopped line {line:?}"));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            [served, "connections", "served,", refused, "refused"] => {
                (served.parse().expect("served"), refused.parse().expect("refused"))
            }
            _ => panic!("malformed stopped line {line:?}"),
        }
    }

    /// Exit status 0 and a stopped line.
    pub fn assert_clean(&self, what: &str) {
        let mut problems = Vec::new();
        if !self.status.success() {
            problems.push(format!("exit {:?}", self.status));
        }
        if !self.stdout.iter().any(|l| l.starts_with("warren: stopped")) {
            problems.push("no stopped line".to_owned());
        }
        if !self.leftovers.is_empty() {
            problems.push(format!("processes left running after the server exited: {:?}", self.leftovers));
        }
        assert!(
            problems.is_empty(),
            "{what}: {}; stdout: {:?}; stderr: {}",
            problems.join("; "),
            self.stdout,
            self.stderr
        );
    }
}

impl Server {
    /// `warren serve <protocol> --model <model> --listen 127.0.0.1:0 -d 0 <extra>`.
    pub fn serve(protocol: &str, model: &str, extra: &[&str]) -> Server {
        let mut args = vec!["serve", protocol, "--model", model, "--listen", "127.0.0.1:0", "-d", "0"];
        args.extend_from_slice(extra);
        Server::spawn(&args)
    }

    /// Any server command that prints the readiness line.
    pub fn spawn(args: &[&str]) -> Server {
        Server::start(command(args), args.join(" "))
    }

    /// Start `cmd` (stdout and stderr piped) and wait for its readiness line.
    pub fn start(mut cmd: Command, label: String) -> Server {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: spawn: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = drain(child.stderr.take().expect("stderr piped"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = io::BufReader::new(stdout);
            let mut line = String::new();
            while matches!(io::BufRead::read_line(&mut reader, &mut line), Ok(n) if n > 0) {
                if tx.send(line.trim_end_matches(['\r', '\n']).to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut server = Server {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            label,
            ready: String::new(),
            lines,
            seen: Vec::new(),
            stderr,
            exited: None,
        };
        let ready = server.wait_stdout(|l| l.starts_with("warren: serving "), T).unwrap_or_else(|| {
            let status = server.child.try_wait().ok().flatten();
            panic!(
                "{}: no readiness line within {T:?} (exit {status:?}); stdout: {:?}; stderr: {}",
                server.label,
                server.seen,
                server.stderr.take()
            )
        });
        let addr = ready.rsplit(" on ").next().and_then(|a| a.parse().ok());
        // A server of handed-over connections names its hand-off socket, not an address.
        let handoff = ready.contains(" (hand-off) ");
        server.addr = addr
            .or(handoff.then(|| ([0, 0, 0, 0], 0).into()))
            .unwrap_or_else(|| panic!("{}: no address in {ready:?}", server.label));
        server.ready = ready;
        server.seen.clear();
        server
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (bounded) for a stdout line matching `pred`; lines before it are kept.
    pub fn wait_stdout(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap_or_else(|e| panic!("{}: kill {sig}: {e}", self.label));
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited.is_none()
    }

    /// Wait (bounded) for the server to exit by itself.
    pub fn wait_exit(mut self, within: Duration) -> Stopped {
        let start = Instant::now();
        let status = self.exited.take().or_else(|| wait_bounded(&mut self.child, within));
        let Some(status) = status else {
            let label = self.label.clone();
            let stderr = self.stderr.take();
            force_kill(&mut self.child);
            self.exited = self.child.try_wait().ok().flatten();
            panic!("{label}: did not exit within {within:?}; stdout: {:?}; stderr: {stderr}", self.seen);
        };
        self.exited = Some(status);
        self.finish(status, start.elapsed())
    }

    /// Send `sig` and wait (bounded) for the exit.
    pub fn stop_with(self, sig: Signal) -> Stopped {
        self.signal(sig);
        self.wait_exit(EXIT_BOUND)
    }

    /// SIGTERM and wait (bounded) for the exit.
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::SIGTERM)
    }

    /// SIGTERM, wait, and check exit status 0 and the stopped line.
    pub fn stop_clean(self) -> Stopped {
        let label = self.label.clone();
        let stopped = self.stop();
        stopped.assert_clean(&label);
        stopped
    }

    fn finish(&mut self, status: ExitStatus, took: Duration) -> Stopped {
        // The server stops its own children before it exits: none of its group may outlive it.
        let mut leftovers = Vec::new();
        super::eventually(Duration::from_secs(2), || {
            leftovers = group_members(self.pid());
            leftovers.is_empty()
        });
        let leftovers: Vec<String> = leftovers.into_iter().map(describe).collect();
        if !leftovers.is_empty() {
            let _ = kill(Pid::from_raw(-self.pid()), Signal::SIGKILL);
        }
        // The rest of stdout: until the pipe closes, bounded in case a stray child holds it.
        let end = Instant::now() + Duration::from_secs(3);
        while let Ok(line) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        Stopped {
            status,
            stdout: std::mem::take(&mut self.seen),
            stderr: self.stderr.take_after_eof(),
            took,
            leftovers,
        }
    }
}

/// Live (not zombie) processes in process group `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        // After the name: state, ppid, pgrp.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse() == Ok(pgid) {
            pids.push(pid);
        }
    }
    pids
}

/// A process, for a message: its pid, its command line and the signals it ignores.
fn describe(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ignored = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap_or("SigIgn: ?").replace('\t', " ");
    format!("{pid} ({}; {ignored})", cmdline.trim_end())
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() && !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            if wait_bounded(&mut self.child, EXIT_BOUND).is_none() {
                force_kill(&mut self.child);
            }
        }
        // Whatever happened, leave no process of this server behind.
        if !group_members(self.pid()).is_empty() {
            let _ = kill(Pid::from_raw(-self.pid()), Signal::SIGKILL);
        }
    }
}
