//! Chat clients over raw sockets, written from docs/protocols.md: JSON mode and plain-text mode.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Lines, T};

/// A JSON-mode chat user.
pub struct Json {
    pub conn: Lines,
    /// Events read while looking for another one.
    pub skipped: Vec<Value>,
}

impl Json {
    /// Connect and say hello; the welcome must come back first.
    pub fn connect(addr: SocketAddr) -> (Json, Value) {
        let mut user = Json { conn: Lines::connect(addr), skipped: Vec::new() };
        user.cmd(json!({"cmd": "hello", "version": 1}));
        let welcome = user.expect("welcome");
        assert_eq!(welcome["version"], 1, "{welcome}");
        (user, welcome)
    }

    /// Connect, say hello and take the nickname.
    pub fn named(addr: SocketAddr, nick: &str) -> Json {
        let (mut user, welcome) = Json::connect(addr);
        user.cmd(json!({"cmd": "nick", "nick": nick}));
        let ev = user.expect("nick");
        assert_eq!(ev, json!({"event": "nick", "old": welcome["nick"], "new": nick}));
        user
    }

    pub fn cmd(&mut self, cmd: Value) {
        self.conn.send(&cmd.to_string());
    }

    /// The next event, whatever it is; `None` at a clean end of file.
    pub fn next_event(&mut self, within: Duration) -> Option<Value> {
        match self.conn.next_line(within) {
            Ok(Some(line)) => {
                Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("event is not JSON ({e}): {line:?}")))
            }
            Ok(None) => None,
            Err(e) => panic!("no event: {e}"),
        }
    }

    pub fn event(&mut self) -> Value {
        self.next_event(T).expect("end of file where an event was expected")
    }

    /// The next event, which must be of kind `kind`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let ev = self.event();
        assert_eq!(ev["event"], kind, "expected a {kind} event, got {ev}");
        ev
    }

    /// Read until an event of kind `kind` arrives; the ones before it go to `skipped`.
    pub fn until(&mut self, kind: &str) -> Value {
        loop {
            let ev = self.event();
            if ev["event"] == kind {
                return ev;
            }
            self.skipped.push(ev);
        }
    }

    /// Join `channel`: the `joined` event (users counted) and then `names`.
    pub fn join(&mut self, channel: &str) -> (Value, Value) {
        self.cmd(json!({"cmd": "join", "channel": channel}));
        let joined = self.until("joined");
        let names = self.expect("names");
        (joined, names)
    }

    /// Say `text` on the current channel and wait for it to come back (the hub relayed it).
    pub fn say(&mut self, text: &str) -> Value {
        self.cmd(json!({"cmd": "say", "text": text}));
        loop {
            let ev = self.until("message");
            if ev["text"] == text {
                return ev;
            }
            self.skipped.push(ev);
        }
    }

    /// `list`: channel name to user count. Everything the hub sent before the answer is in
    /// `skipped`.
    pub fn list(&mut self) -> Vec<(String, u64)> {
        self.cmd(json!({"cmd": "list"}));
        let ev = self.until("list");
        let channels = ev["channels"].as_array().unwrap_or_else(|| panic!("list without channels: {ev}"));
        channels.iter().map(|c| (c["channel"].as_str().unwrap().to_owned(), c["users"].as_u64().unwrap())).collect()
    }

    /// Messages among the skipped events; clears them.
    pub fn take_messages(&mut self) -> Vec<Value> {
        let messages = self.skipped.iter().filter(|ev| ev["event"] == "message").cloned().collect();
        self.skipped.clear();
        messages
    }
}

/// A plain-text chat user (what `nc` would show).
pub struct Plain {
    pub conn: Lines,
    pub skipped: Vec<String>,
}

impl Plain {
    /// Connect; the first line (a command) selects plain text and brings the welcome first.
    pub fn connect(addr: SocketAddr, first: &str) -> (Plain, String) {
        let mut user = Plain { conn: Lines::connect(addr), skipped: Vec::new() };
        user.conn.send(first);
        let welcome = user.conn.line();
        assert!(welcome.starts_with("* welcome to warren chat (protocol 1); you are "), "welcome: {welcome:?}");
        (user, welcome)
    }

    pub fn send(&mut self, line: &str) {
        self.conn.send(line);
    }

    pub fn line(&mut self) -> String {
        self.conn.line()
    }

    /// Read until `line` arrives; the lines before it go to `skipped`.
    pub fn until(&mut self, line: &str) {
        loop {
            let got = self.conn.line();
            if got == line {
                return;
            }
            self.skipped.push(got);
        }
    }
}
