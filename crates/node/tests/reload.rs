//! Reloading under load drops no connection and keeps unchanged listeners; redirect relays.

mod support;

use std::io::Write;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use support::{TestNode, exchange, open, read_line};

const BASE: &str = r#"
[[service]]
name = "held"
port = 0
server = "/bin/sh"
server_args = ["-c", "echo up; exec cat"]
[[service]]
name = "fast"
port = 0
server = "/bin/echo"
server_args = ["ok"]
"#;

fn config(extra: &str) -> warren_node::Config {
    warren_node::toml_config::parse(&format!("status = \"off\"\n{BASE}{extra}"), "test").unwrap()
}

#[test]
fn reload_under_load_drops_nothing() {
    let node = TestNode::with(config(""));
    let (fast, held_addr) = (node.addr("fast"), node.addr("held"));
    let (mut held, greeting) = open(held_addr);
    assert_eq!(greeting, "up\n");
    let done = AtomicBool::new(false);
    let started = Barrier::new(2);
    let handle = node.handle.as_ref().unwrap();
    let reloads = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            started.wait();
            let replies: Vec<String> = (0..300).map(|_| exchange(fast, b"")).collect();
            done.store(true, Ordering::SeqCst);
            replies
        });
        started.wait();
        let mut reloads = 0;
        while !done.load(Ordering::SeqCst) || reloads == 0 {
            let extra =
                if reloads % 2 == 0 { "[[service]]\nname = \"extra\"\nbuiltin = \"echo\"\nport = 0\n" } else { "" };
            handle.reload(config(extra)).unwrap();
            reloads += 1;
        }
        let replies = load.join().unwrap();
        let failed = replies.iter().filter(|r| *r != "ok\n").count();
        assert_eq!(failed, 0, "{failed} of 300 connections failed across {reloads} reloads");
        reloads
    });
    assert!(reloads >= 1);
    assert_eq!((node.addr("fast"), node.addr("held")), (fast, held_addr), "unchanged listeners stay open");
    held.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&held), "still here\n", "the connection in flight carries on");
}

#[test]
fn reload_with_a_bad_service_keeps_the_old_config() {
    let node = TestNode::with(config(""));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let bad = format!("[[service]]\nname = \"clash\"\nport = {port}\nserver = \"/bin/true\"\n");
    let err = node.handle.as_ref().unwrap().reload(config(&bad)).unwrap_err();
    assert!(err.contains("clash") && err.contains("cannot listen"), "{err}");
    assert_eq!(exchange(node.addr("fast"), b""), "ok\n");
}

#[test]
fn redirect_relays_both_ways() {
    let target = TestNode::start("[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n");
    let to = target.addr("echo");
    let node = TestNode::start(&format!(
        "[[service]]\nname = \"relay\"\nport = 0\nredirect = \"{} {}\"\nlog_on_success = [\"HOST\", \"TRAFFIC\"]\n",
        to.ip(),
        to.port()
    ));
    assert_eq!(exchange(node.addr("relay"), b"through the relay"), "through the relay");
    node.until("the relay to finish", |s| s.service("relay").unwrap().running == 0);
}
