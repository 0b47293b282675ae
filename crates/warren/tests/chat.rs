//! chat under every model: four users (two JSON, two plain text) on two channels. Messages reach
//! exactly the members of their channel, nicknames are unique, `/list` counts, leaving users
//! are announced. Then the course's `warren chatserver`: the shutdown notice, the statistics and
//! the idle exit.

#[macro_use]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::chat::{Json, Plain};
use support::{Server, T};

fn channels(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

fn message(channel: &str, from: &str, text: &str) -> Value {
    json!({"event": "message", "channel": channel, "from": from, "text": text})
}

fn two_channels(model: &str) {
    let server = Server::serve("chat", model, &[]);
    let addr = server.addr;

    // alice (JSON) on #a.
    let mut alice = Json::named(addr, "alice");
    let (joined, names) = alice.join("#a");
    assert_eq!(joined, json!({"event": "joined", "channel": "#a", "nick": "alice", "users": 1}));
    assert_eq!(names, json!({"event": "names", "channel": "#a", "users": 1, "nicks": ["alice"]}));

    // bob (plain text) on #a: everyone on #a sees him join.
    let (mut bob, welcome) = Plain::connect(addr, "/nick bob");
    let guest = welcome.split("you are ").nth(1).and_then(|s| s.split('.').next()).expect("guest name").to_owned();
    assert_eq!(bob.line(), format!("* {guest} is now known as bob"));
    bob.send("/join a");
    assert_eq!(bob.line(), "* bob joined #a (2 users)");
    assert_eq!(bob.line(), "* on #a (2 users): alice bob");
    assert_eq!(alice.expect("joined"), json!({"event": "joined", "channel": "#a", "nick": "bob", "users": 2}));

    // carol (JSON): nicknames are unique, case-insensitively; then #b.
    let (mut carol, _) = Json::connect(addr);
    carol.cmd(json!({"cmd": "nick", "nick": "Alice"}));
    let refused = carol.expect("error");
    assert!(refused["message"].as_str().unwrap().contains("already in use"), "{model}: {refused}");
    carol.cmd(json!({"cmd": "nick", "nick": "carol"}));
    assert_eq!(carol.expect("nick")["new"], "carol");
    carol.join("#b");

    // dave (plain text) on #b; BOB is taken too.
    let (mut dave, _) = Plain::connect(addr, "/nick BOB");
    let refused = dave.line();
    assert!(refused.starts_with("! error: ") && refused.contains("already in use"), "{model}: {refused:?}");
    dave.send("/nick dave");
    assert!(dave.line().ends_with(" is now known as dave"));
    dave.send("/join #b");
    assert_eq!(dave.line(), "* dave joined #b (2 users)");
    assert_eq!(dave.line(), "* on #b (2 users): carol dave");
    assert_eq!(carol.until("joined")["nick"], "dave");

    // /list counts, in both modes.
    assert_eq!(carol.list(), channels(&[("#a", 2), ("#b", 2)]));
    dave.send("/list");
    assert_eq!([dave.line(), dave.line(), dave.line()], ["* 2 channels:", "*   #a (2 users)", "*   #b (2 users)"]);

    // A message on #a reaches alice and bob, and neither carol nor dave. The hub delivers in one
    // order: once alice has her own copy, a later request's answer comes after anything the hub
    // would have sent carol or dave.
    assert_eq!(alice.say("hello, a"), message("#a", "alice", "hello, a"));
    bob.until("[#a] <alice> hello, a");
    assert!(bob.skipped.is_empty(), "{model}: bob saw {:?}", bob.skipped);
    carol.list();
    assert_eq!(carol.take_messages(), Vec::<Value>::new(), "{model}: carol is not on #a");
    dave.send("/list");
    dave.until("*   #b (2 users)");
    assert!(dave.skipped.iter().all(|l| !l.starts_with('[')), "{model}: dave is not on #a: {:?}", dave.skipped);
    dave.skipped.clear();

    // And one on #b, from plain text, reaches carol and dave only.
    dave.send("hello, b");
    dave.until("[#b] <dave> hello, b");
    assert_eq!(carol.until("message"), message("#b", "dave", "hello, b"));
    alice.list();
    assert_eq!(alice.take_messages(), Vec::<Value>::new(), "{model}: alice is not on #b");
    bob.send("/list");
    bob.until("*   #b (2 users)");
    assert!(bob.skipped.iter().all(|l| !l.starts_with('[')), "{model}: bob is not on #b: {:?}", bob.skipped);

    // carol leaves #b: both she and dave are told. bob quits: alice sees him go.
    carol.cmd(json!({"cmd": "leave"}));
    assert_eq!(carol.expect("left"), json!({"event": "left", "channel": "#b", "nick": "carol", "reason": "leave"}));
    assert_eq!(dave.line(), "* carol left #b");
    bob.send("/quit");
    bob.until("* bye");
    bob.conn.expect_eof(T);
    assert_eq!(alice.until("left"), json!({"event": "left", "channel": "#a", "nick": "bob", "reason": "quit"}));
    assert_eq!(alice.list(), channels(&[("#a", 1), ("#b", 1)]));

    // A closed connection counts as quitting: dave's is announced to nobody left on #b, and
    // the channel goes away.
    drop(dave);
    let gone = support::eventually(T, || alice.list() == channels(&[("#a", 1)]));
    assert!(gone, "{model}: #b disappears once dave's connection closes");

    let stopped = server.stop_clean();
    assert!(
        stopped.stdout.iter().any(|l| l.starts_with("chat: ") && l.contains("(peak 4)")),
        "{model}: {:?}",
        stopped.stdout
    );
}

mod channels {
    per_concurrent_model!(super::two_channels);
}

/// `iterative` serves one user at a time: the next one is welcomed only once the first leaves.
#[test]
fn iterative_serves_one_user_at_a_time() {
    let server = Server::serve("chat", "iterative", &[]);
    let mut first = Json::named(server.addr, "first");
    first.join("#a");
    let mut second = support::Lines::connect(server.addr);
    second.send(r#"{"cmd":"hello","version":1}"#);
    let early = second.next_line(Duration::from_millis(300));
    assert!(early.is_err(), "the second user is not served while the first is: {early:?}");
    first.cmd(json!({"cmd": "quit"}));
    first.until("bye");
    drop(first);
    let welcome: Value = serde_json::from_str(&second.line()).unwrap();
    assert_eq!(welcome["event"], "welcome");
    second.send(r#"{"cmd":"list"}"#);
    assert_eq!(second.line(), r#"{"event":"list","channels":[]}"#, "#a went away with its only user");
    drop(second);
    server.stop_clean();
}

/// `warren chatserver -p 0 -d 1`: on SIGTERM every user gets the shutdown notice in its own mode
/// and the connection closes; the server prints its statistics and the stopped line, exit 0.
fn chatserver_shutdown(model: &str, sig: Signal) {
    let server = Server::spawn(&["chatserver", "-p", "0", "-d", "1", "--model", model]);
    let mut json_users: Vec<Json> = (0..2).map(|i| Json::named(server.addr, &format!("j{i}"))).collect();
    let mut plain_users: Vec<Plain> = (0..2)
        .map(|i| {
            let (mut user, _) = Plain::connect(server.addr, &format!("/nick p{i}"));
            user.line();
            user
        })
        .collect();
    json_users[0].join("#x");
    json_users[0].say("before the end");

    let stopped = server.stop_with(sig);
    for user in &mut json_users {
        let last = user.until("shutdown");
        assert_eq!(last, json!({"event": "shutdown", "message": "server shutting down"}));
        assert_eq!(user.next_event(T), None, "{model}: the connection closes after the notice");
    }
    for user in &mut plain_users {
        user.until("! server shutting down");
        user.conn.expect_eof(T);
    }
    stopped.assert_clean(model);
    // Every user was disconnected by the shutdown, so none is left when the statistics are taken.
    let stats = stopped.stdout.iter().find(|l| l.starts_with("chat: ") && l.contains(" now (peak "));
    let stats = stats.unwrap_or_else(|| panic!("{model}: statistics line: {:?}", stopped.stdout));
    assert!(stats.starts_with("chat: 0 users now (peak 4), "), "{model}: {stats}");
    assert!(stats.contains(" 1 message relayed (1 deliveries), "), "{model}: {stats}");
    assert_eq!(stopped.counts(), (4, 0), "{model}: {}", stopped.stopped_line());
    // -d 1 narrates every event.
    assert!(stopped.stdout.iter().any(|l| l.contains("j0 joined #x")), "{model}: {:?}", stopped.stdout);
}

#[test]
fn chatserver_sigterm_tells_every_user() {
    chatserver_shutdown("pool", Signal::SIGTERM);
}

#[test]
fn chatserver_sigint_tells_every_user() {
    chatserver_shutdown("pool", Signal::SIGINT);
}

mod chatserver_models {
    use super::*;
    per_concurrent_model!(|model| chatserver_shutdown(model, Signal::SIGTERM));
}

/// The statistics are taken once every connection has left the hub: repeated, since under
/// `thread` a connection used to leave only after the server stopped waiting for it.
#[test]
fn statistics_after_every_user_left() {
    for round in 0..30 {
        let server = Server::spawn(&["chatserver", "-p", "0", "--model", "thread"]);
        let users: Vec<Json> = (0..4).map(|i| Json::named(server.addr, &format!("u{i}"))).collect();
        server.signal(Signal::SIGTERM);
        // Close each connection once the server said goodbye, so that none lingers.
        for mut user in users {
            user.until("shutdown");
            assert_eq!(user.next_event(T), None);
        }
        let stopped = server.wait_exit(support::EXIT_BOUND);
        stopped.assert_clean("chatserver");
        let stats = stopped.stdout.iter().find(|l| l.contains(" now (peak ")).expect("statistics");
        assert!(stats.starts_with("chat: 0 users now (peak 4)"), "round {round}: {stats}");
    }
}

/// `--idle-exit 1s`: an idle chat server stops by itself, with the idle stopped line.
#[test]
fn chatserver_idle_exit() {
    let start = Instant::now();
    let server = Server::spawn(&["chatserver", "-p", "0", "-d", "0", "--idle-exit", "1s"]);
    // Some activity first: the idle clock starts again from it.
    let mut user = Json::named(server.addr, "early");
    user.cmd(json!({"cmd": "quit"}));
    user.until("bye");
    drop(user);
    let stopped = server.wait_exit(Duration::from_secs(10));
    stopped.assert_clean("chatserver --idle-exit 1s");
    assert!(
        stopped.stopped_line().starts_with("warren: stopped (idle): 1 connections served"),
        "{}",
        stopped.stopped_line()
    );
    assert!(start.elapsed() >= Duration::from_secs(1), "not idle for a whole second");
}

/// The inodes of the Unix sockets that processes `pids` hold, from /proc.
fn unix_sockets_of(pids: &[i32]) -> Vec<(u64, String)> {
    let held: std::collections::HashSet<u64> = pids
        .iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    // Num RefCount Protocol Flags Type St Inode [Path]
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(6)?.parse().ok()?;
            held.contains(&inode).then(|| (inode, fields.get(7).unwrap_or(&"").to_string()))
        })
        .collect()
}

/// The hub of `fork` and `prefork` has no address: its links are socketpairs the server's
/// processes inherit, so no other local process can find the hub in /proc/net/unix, connect to
/// it and speak as a session.
fn hub_has_no_address(model: &str) {
    let server = Server::serve("chat", model, &[]);
    let mut alice = Json::named(server.addr, "alice");
    let mut bob = Json::named(server.addr, "bob");
    alice.join("#a");
    bob.join("#a");
    assert_eq!(alice.say("hi"), message("#a", "alice", "hi"));
    assert_eq!(bob.until("message"), message("#a", "alice", "hi"));

    let sockets = unix_sockets_of(&support::group_members(server.pid()));
    // The hub's links, at least: one per user and the connector.
    assert!(sockets.len() >= 3, "{model}: the hub's links are Unix sockets: {sockets:?}");
    let named: Vec<_> = sockets.iter().filter(|(_, path)| !path.is_empty()).collect();
    assert!(named.is_empty(), "{model}: the server's Unix sockets have no address: {named:?}");
    drop((alice, bob));
    server.stop_clean();
}

mod hub_address {
    #[test]
    fn fork() {
        super::hub_has_no_address("fork");
    }
    #[test]
    fn prefork() {
        super::hub_has_no_address("prefork");
    }
}

/// Lines cut across writes are put together, and a flood of empty lines (each a line the server
/// must split off) is taken in stride: the command after 4 MiB of them is answered.
#[test]
fn lines_split_across_writes_and_a_flood_of_empty_lines() {
    let server = Server::serve("chat", "event", &[]);
    let (mut user, _) = Json::connect(server.addr);
    for part in [&br#"{"cmd":"ni"#[..], br#"ck","nick":"#, br#""split"}"#, b"\r", b"\n"] {
        user.conn.send_raw(part);
        user.conn.stream.flush().unwrap();
    }
    assert_eq!(user.expect("nick")["new"], "split");
    let mut flood = vec![b'\n'; 4 << 20];
    flood.extend_from_slice(b"{\"cmd\":\"list\"}\n");
    user.conn.send_raw(&flood);
    assert_eq!(user.expect("list"), json!({"event": "list", "channels": []}));
    drop(user);
    server.stop_clean();
}
