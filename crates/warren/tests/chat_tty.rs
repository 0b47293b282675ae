//! `warren chat` in a real terminal: tmux, on a private server socket, runs the client while
//! another user's messages are printed above its prompt. Lines pasted at once (tmux sends the
//! whole line in one write, as a paste does) must reach the other users whole, and the prompt
//! must show the nick and channel the server has just confirmed.
//!
//! Skipped, with a message, only when tmux is not installed (scripts/test installs it).

mod support;

use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::chat::Json;
use support::{BIN, Server, T, eventually};

/// A tmux server of this test's own (`-L`), with one session running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Whether tmux can be run at all.
    fn installed() -> bool {
        Command::new("tmux").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// A session `s` of 200x50 running `command`.
    fn start(tag: &str, command: &str) -> Tmux {
        let tmux = Tmux { socket: format!("warren-chat-tty-{tag}-{}", std::process::id()) };
        let out = tmux.run(&["new-session", "-d", "-s", "s", "-x", "200", "-y", "50", command]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// Send `text` and Enter in one write, as pasting a line does.
    fn paste_line(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", "s", text, "Enter"]);
        assert!(out.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// What the terminal shows.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "s"]).stdout).into_owned()
    }

    /// The last line with anything on it: the prompt line.
    fn prompt_line(&self) -> String {
        self.screen().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_owned()
    }

    /// Wait (bounded) until the prompt line starts with `prompt` (tmux drops trailing spaces).
    fn wait_prompt(&self, prompt: &str) {
        let shown = eventually(T, || self.prompt_line().starts_with(prompt.trim_end()));
        assert!(shown, "the prompt never became {prompt:?}; the screen:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn pasted_lines_arrive_whole_while_messages_print_and_the_prompt_follows_the_nick() {
    if !Tmux::installed() {
        eprintln!("skipped: tmux is not installed (scripts/test installs it)");
        return;
    }
    let server = Server::serve("chat", "thread", &[]);
    let mut bob = Json::named(server.addr, "bob");
    bob.join("#tty");
    let mut carol = Json::named(server.addr, "carol");
    carol.join("#tty");

    let tmux = Tmux::start("paste", &format!("{BIN} chat 127.0.0.1 {}", server.addr.port()));
    let welcomed = eventually(T, || tmux.screen().contains("* welcome to warren chat"));
    assert!(welcomed, "no welcome on the screen:\n{}", tmux.screen());
    tmux.wait_prompt("guest");

    // Each prompt change is a server answer: the prompt shows it without another key.
    tmux.paste_line("/nick alice");
    tmux.wait_prompt("alice> ");
    tmux.paste_line("/join #tty");
    tmux.wait_prompt("alice #tty> ");

    // Carol's messages print in alice's terminal while alice's lines are pasted in.
    let sent: Vec<String> = (0..20).map(|i| format!("alice pastes line {i} in one go")).collect();
    for (i, line) in sent.iter().enumerate() {
        carol.cmd(json!({"cmd": "say", "text": format!("carol interrupts {i}")}));
        tmux.paste_line(line);
    }
    let mut from_alice = Vec::new();
    while from_alice.len() < sent.len() {
        let event = bob.next_event(T).unwrap_or_else(|| panic!("bob's connection ended; got {from_alice:?}"));
        if event["event"] == "message" && event["from"] == "alice" {
            from_alice.push(event["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(from_alice, sent, "bob receives alice's pasted lines whole and in order");

    tmux.paste_line("/nick alice2");
    tmux.wait_prompt("alice2 #tty> ");
    let screen = tmux.screen();
    assert!(screen.contains("[#tty] <carol> carol interrupts 19"), "carol's messages are shown:\n{screen}");
    assert!(screen.contains("[#tty] <alice> alice pastes line 19 in one go"), "alice's own lines come back:\n{screen}");
    server.stop_clean();
}
