//! A running `warren up` for the node's tests: started by the test (`Up::start`) or by whatever
//! starts it the way a service manager would (`Up::spawn`), its stdout read line by line.
// Each test binary that includes this uses its own part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{T, command};

/// A running `warren up`, its stdout read line by line; killed with its process group on drop.
pub struct Up {
    pub child: Child,
    lines: Receiver<String>,
}

impl Up {
    pub fn start(args: &[&str]) -> Up {
        Up::spawn(command(args))
    }

    /// Runs `cmd` (which execs `warren up` somewhere) in a process group of its own, with its
    /// stdout piped to [`Up::until`]; standard error stays as `cmd` has it.
    pub fn spawn(mut cmd: Command) -> Up {
        cmd.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("warren up starts");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
        Up { child, lines }
    }

    /// Lines up to and including the first for which `last` holds.
    pub fn until(&self, mut last: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.lines.recv_timeout(T).unwrap_or_else(|_| panic!("timed out; output so far: {seen:#?}"));
            let done = last(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The address of `service` from its readiness line.
pub fn addr(lines: &[String], service: &str, transport: &str) -> SocketAddr {
    let prefix = format!("warren: serving {service} ({transport}) under ");
    let line =
        lines.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no line for {service}: {lines:#?}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Sends `input`, half-closes, and returns everything the service answers.
pub fn exchange(addr: SocketAddr, input: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(input).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
