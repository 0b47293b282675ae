//! The switch tests' backends: HTTP servers whose `who.txt` (and `api/who.txt`) answer with
//! their name, so that an answer through the switch says which backend gave it.

use std::path::PathBuf;
use std::time::Duration;

use super::Server;

/// A fresh directory whose `who.txt` and `api/who.txt` say `name`.
pub fn root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-who-{}-{name}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(dir.join("who.txt"), name).unwrap();
    std::fs::write(dir.join("api/who.txt"), name).unwrap();
    dir
}

/// `warren serve http --model event` on a port of its own, answering `who.txt` with `name`.
pub fn backend(name: &str) -> Server {
    let root = root(name);
    Server::serve("http", "event", &["--root", root.to_str().unwrap()])
}

/// The same server taking connections handed off at `target` instead of listening on a port.
pub fn receiver(name: &str, target: &str) -> Server {
    let root = root(name);
    Server::spawn(&[
        "serve",
        "http",
        "--model",
        "event",
        "--handoff-listen",
        target,
        "--root",
        root.to_str().unwrap(),
        "-d",
        "0",
    ])
}

/// `warren switch --listen 127.0.0.1:0 -d 0 <args>`.
pub fn switch(args: &[&str]) -> Server {
    let mut all = vec!["switch", "--listen", "127.0.0.1:0", "-d", "0"];
    all.extend_from_slice(args);
    Server::spawn(&all)
}

/// Wait (bounded) for the switch to say that backend `addr` is down.
pub fn wait_down(switch: &mut Server, addr: &str, within: Duration) {
    let down = format!("warren: switch: backend {addr} is down");
    assert!(switch.wait_stdout(|l| l == down, within).is_some(), "no {down:?}");
}
