//! The file server against a hostile peer, through the binary: rights from credentials,
//! quotas, server-assigned upload ids, callbacks that only their client can take, a peer that
//! asks without reading, a stalled upload, and the control endpoint's cap and descriptor
//! shortage.

#[macro_use]
mod support;
mod files_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use files_support::{Upload, cancel, conn, control, partials, root, serve, serve_strict};
use support::{BIN, Server, T, command, cpu_time, run};
use warren_fileserver::wire::{ErrorCode, Outcome, Reply, Request, Right};
use warren_fileserver::{ClientError, Connection};

fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Server { code: ErrorCode::Denied, message }) => message,
        other => panic!("not denied: {other:?}"),
    }
}

/// A tokens file (0600) beside `root` with these lines.
fn tokens_file(root: &Path, lines: &[String]) -> PathBuf {
    let path = root.with_extension("tokens");
    std::fs::write(&path, lines.join("\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn authed(addr: SocketAddr, token: &str) -> Connection {
    let mut c = conn(addr);
    c.auth(token).unwrap();
    c
}

/// Anonymous clients read and nothing more (by default); a read token does not write; a write
/// token does; an unknown token is refused; every refusal says why, and nothing changed.
#[test]
fn rights_come_from_credentials_and_anonymous_clients_only_read() {
    let root = root("rights");
    std::fs::write(root.join("f"), b"kept").unwrap();
    let (reader, reader_hash) = warren_fileserver::auth::new_token().unwrap();
    let (writer, writer_hash) = warren_fileserver::auth::new_token().unwrap();
    let tokens = tokens_file(&root, &[format!("read {reader_hash} r"), format!("write {writer_hash} w")]);
    let server = serve_strict(&root, "thread", &["--tokens", tokens.to_str().unwrap()]);

    let mut anonymous = conn(server.addr);
    assert_eq!(anonymous.get("/f").unwrap().1, b"kept");
    assert!(denied(anonymous.delete("/f")).contains("write right"));
    assert!(denied(conn(server.addr).put("/f", 3, &mut &b"bad"[..])).contains("write right"));
    assert!(denied(authed(server.addr, &reader).put("/g", 3, &mut &b"bad"[..])).contains("write right"));
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"kept");
    assert!(!root.join("g").exists());
    assert_eq!(partials(&root), 0, "refused before anything was stored");

    let mut w = authed(server.addr, &writer);
    w.put("/g", 3, &mut &b"new"[..]).unwrap();
    w.delete("/f").unwrap();
    assert!(!root.join("f").exists());
    let mut unknown = conn(server.addr);
    denied(unknown.auth("guessed"));
    drop(server);

    // No anonymous access at all.
    let server = serve_strict(&root, "event", &["--anonymous", "none"]);
    assert!(denied(conn(server.addr).stat("/g")).contains("credential"));
    drop(server);

    // A tokens file others may write is refused, as sshd refuses such authorized_keys.
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o622)).unwrap();
    let args = ["files", "serve", "--root", root.to_str().unwrap(), "--tokens", tokens.to_str().unwrap()];
    let (status, _, err) = run(command(&args), b"", T);
    assert!(!status.success() && err.contains("may be written by group or others"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&tokens).unwrap();
}

/// `warren files token` makes a credential the server takes, and the clients present it.
#[test]
fn the_cli_makes_and_presents_tokens() {
    let root = root("cli-token");
    let (status, token, line) = run(command(&["files", "token", "--right", "write", "--name", "ci"]), b"", T);
    assert!(status.success(), "{line}");
    let tokens = tokens_file(&root, &[line.trim().to_owned()]);
    let token_file = root.with_extension("token");
    std::fs::write(&token_file, token).unwrap();
    let local = root.with_extension("local");
    std::fs::write(&local, b"by token\n").unwrap();
    let server = serve_strict(&root, "pool", &["--tokens", tokens.to_str().unwrap()]);
    let addr = server.addr.to_string();
    let put = |with_token: bool| {
        let mut args = vec!["files", "put", &addr, local.to_str().unwrap(), "/t.txt"];
        if with_token {
            args.extend(["--token-file", token_file.to_str().unwrap()]);
        }
        run(command(&args), b"", T)
    };
    let (status, _, err) = put(false);
    assert!(!status.success() && err.contains("permission denied"), "{err}");
    let (status, _, err) = put(true);
    assert!(status.success() && err.contains("upload id"), "{err}");
    assert_eq!(std::fs::read(root.join("t.txt")).unwrap(), b"by token\n");
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
    for f in [tokens, token_file, local] {
        std::fs::remove_file(f).unwrap();
    }
}

/// An upload over the per-upload limit, or over its client's bytes in flight, is refused
/// before the server stores a byte (no `Ready`, no partial file); other clients have their own
/// allowance, and an ended upload gives its bytes back.
#[test]
fn quotas_refuse_uploads_before_anything_is_stored() {
    let root = root("quota");
    let (a, a_hash) = warren_fileserver::auth::new_token().unwrap();
    let (b, b_hash) = warren_fileserver::auth::new_token().unwrap();
    let tokens = tokens_file(&root, &[format!("write {a_hash} a"), format!("write {b_hash} b")]);
    let limits = ["--max-upload", "1000", "--max-in-flight", "1500"];
    let server = serve_strict(&root, "event", &[&["--tokens", tokens.to_str().unwrap()][..], &limits].concat());
    // A credential, then an upload, in one write; the answer to the upload.
    let start = |token: &str, path: &str, size: u64| {
        let mut stream = support::connect(server.addr);
        let mut head = Vec::new();
        Request::Auth { token: token.into() }.encode(&mut head);
        Request::Put { size, path: path.into() }.encode(&mut head);
        stream.write_all(&head).unwrap();
        let mut up = Upload::from_stream(stream);
        assert!(matches!(up.reply(), Reply::Authorized { right: Right::Write }));
        (up.reply(), up)
    };
    let (reply, _) = start(&a, "/big", 2000);
    assert!(matches!(&reply, Reply::Error { code: ErrorCode::TooLarge, .. }), "{reply:?}");
    assert_eq!(partials(&root), 0);
    let (reply, mut first) = start(&a, "/one", 1000);
    assert!(matches!(reply, Reply::Ready { .. }), "{reply:?}");
    let (reply, _) = start(&a, "/two", 1000);
    assert!(
        matches!(&reply, Reply::Error { code: ErrorCode::Quota, message } if message.contains("1000 of 1500")),
        "{reply:?}"
    );
    assert_eq!(partials(&root), 1, "only the first upload's partial file");
    let (reply, _other) = start(&b, "/three", 1000);
    assert!(matches!(reply, Reply::Ready { .. }), "another client has its own allowance: {reply:?}");
    first.send(1000);
    assert!(matches!(first.reply(), Reply::Done { .. }));
    let (reply, _) = start(&a, "/two", 1000);
    assert!(matches!(reply, Reply::Ready { .. }), "the finished upload gave its bytes back: {reply:?}");
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&tokens).unwrap();
}

/// Upload ids are drawn by the server: distinct, random, told in `Ready`. A cancel for an id
/// that is not running says `Unknown`, whatever runs, and leaves nothing behind.
#[test]
fn upload_ids_are_the_servers() {
    let root = root("ids");
    let server = serve(&root, "thread", &[]);
    let (mut one, mut two) = (Upload::start(server.addr, "/1", 10), Upload::start(server.addr, "/2", 10));
    assert!(one.id != two.id && one.id != 0 && two.id != 0);
    // Neither a neighbour of a running id nor any other says more than Unknown.
    for guess in [one.id ^ 1, one.id.wrapping_add(1), 1, u64::MAX] {
        let reply = cancel(control(&server), guess);
        assert!(matches!(reply, Reply::CancelResult { outcome: Outcome::Unknown, .. }), "{reply:?}");
    }
    one.send(10);
    two.send(10);
    assert!(matches!(one.reply(), Reply::Done { .. }));
    assert!(matches!(two.reply(), Reply::Done { .. }));
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}

/// A callback owed to an absent client waits for that client: a `Hello` that names its id
/// without its key is denied and takes nothing; the client itself gets it when it comes back.
#[test]
fn owed_callbacks_go_only_to_their_client() {
    let root = root("theft");
    let server = serve(&root, "pool", &["--lease", "1h"]);
    conn(server.addr).put("/f", 2, &mut &b"v1"[..]).unwrap();
    let mut victim = conn(server.addr);
    let me = victim.hello(0, [0; 16]).unwrap();
    assert_eq!(victim.get("/f").unwrap().1, b"v1");
    drop(victim);
    conn(server.addr).put("/f", 2, &mut &b"v2"[..]).unwrap();

    let mut thief = conn(server.addr);
    let other = thief.hello(0, [0; 16]).unwrap();
    assert_ne!(other.client, me.client);
    denied(thief.hello(me.client, other.key));
    denied(thief.hello(me.client, [0; 16]));
    assert!(thief.take_callbacks().is_empty(), "nothing was delivered to the thief");

    let mut victim = conn(server.addr);
    assert_eq!(victim.hello(me.client, me.key).unwrap(), me);
    assert_eq!(victim.take_callbacks(), ["/f"]);
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}

/// VmRSS of `pid`.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A peer that sends thousands of small `List` requests and never reads costs the server a
/// bounded amount of memory (each answer is at most a page, and no request is answered while a
/// few pages wait for the peer); other clients are served meanwhile; and everything asked is
/// answered once the peer reads.
#[test]
fn a_peer_that_asks_without_reading_is_bounded() {
    let root = root("list-flood");
    for i in 0..400 {
        std::fs::write(root.join(format!("{i:03}-{}", "x".repeat(200))), b"").unwrap();
    }
    let server = serve(&root, "thread", &[]);
    // Warm up, then measure from there.
    assert_eq!(conn(server.addr).list("/").unwrap().0.len(), 400);
    let before = rss(server.pid());
    const ASKS: usize = 2000;
    let mut asks = Vec::new();
    for _ in 0..ASKS {
        Request::List { path: "/".into(), after: String::new() }.encode(&mut asks);
    }
    // About 20 KB: it fits in the socket buffers, so every request reaches the server.
    let mut flood = support::connect(server.addr);
    flood.write_all(&asks).unwrap();
    let mut other = conn(server.addr);
    let mut grown = 0;
    let end = Instant::now() + Duration::from_secs(2);
    // A measuring window, not synchronisation: how far the server grows while asked.
    while Instant::now() < end {
        assert_eq!(other.stat(&format!("/000-{}", "x".repeat(200))).map(|m| m.size).ok(), Some(0));
        grown = grown.max(rss(server.pid()).saturating_sub(before));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Unbounded, 2,000 answers of 16 KiB would be 32 MiB.
    assert!(grown < 16 << 20, "the server grew by {} MiB for a peer that does not read", grown >> 20);
    // The peer reads at last: every request was answered.
    flood.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let mut answers = 0;
    let mut chunk = vec![0; 1 << 16];
    while answers < ASKS {
        let n = flood.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {answers} answers");
        got.extend_from_slice(&chunk[..n]);
        while let Some((reply, used)) = Reply::decode(&got).unwrap() {
            assert!(matches!(reply, Reply::List { truncated: true, .. }));
            got.drain(..used);
            answers += 1;
        }
    }
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}

/// An upload whose body stops coming is given up after `--read-timeout` without a byte (not
/// the 5-minute idle timeout): the connection is closed and its partial file removed.
#[test]
fn a_stalled_upload_is_dropped_and_its_partial_file_removed() {
    let root = root("stall");
    let server = serve(&root, "event", &["--read-timeout", "1s"]);
    let mut up = Upload::start(server.addr, "/stalled", 1 << 20);
    up.send(1000);
    assert!(support::eventually(T, || partials(&root) == 1));
    let started = Instant::now();
    assert!(support::eventually(T, || partials(&root) == 0), "the partial file of a stalled upload stays");
    assert!(started.elapsed() < Duration::from_secs(5));
    up.stream.set_read_timeout(Some(T)).unwrap();
    let (_, end) = support::read_all(&mut up.stream, T);
    assert_ne!(end, support::End::Timeout, "the connection is closed");
    assert!(!root.join("stalled").exists());
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}

/// Send a cancel on an open control connection; its answer.
fn control_cancel(stream: &mut TcpStream, id: u64) -> Option<Reply> {
    let mut frame = Vec::new();
    Request::Cancel { id }.encode(&mut frame);
    stream.write_all(&frame).ok()?;
    let mut got = Vec::new();
    let mut chunk = [0; 256];
    loop {
        if let Some((reply, _)) = Reply::decode(&got).unwrap() {
            return Some(reply);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The control endpoint takes at most `--control-max-conns` connections: the next one is told
/// `Busy` and closed, while those it holds keep working.
#[test]
fn the_control_endpoint_caps_its_connections() {
    let root = root("control-cap");
    let server = serve(&root, "thread", &["--control-max-conns", "2"]);
    let addr = control(&server);
    let mut held: Vec<TcpStream> = (0..2).map(|_| support::connect(addr)).collect();
    for c in &mut held {
        c.set_read_timeout(Some(T)).unwrap();
        assert!(matches!(control_cancel(c, 7), Some(Reply::CancelResult { outcome: Outcome::Unknown, .. })));
    }
    let mut third = support::connect(addr);
    third.set_read_timeout(Some(T)).unwrap();
    let (bytes, _) = support::read_all(&mut third, T);
    let refusal = Reply::decode(&bytes).unwrap().map(|(r, _)| r);
    assert!(matches!(refusal, Some(Reply::Error { code: ErrorCode::Busy, .. })), "{refusal:?}");
    for c in &mut held {
        assert!(matches!(control_cancel(c, 8), Some(Reply::CancelResult { .. })), "held connections still work");
    }
    drop(held);
    // Room again once they are gone.
    assert!(support::eventually(T, || {
        let mut c = support::connect(addr);
        c.set_read_timeout(Some(T)).unwrap();
        matches!(control_cancel(&mut c, 9), Some(Reply::CancelResult { .. }))
    }));
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}

/// Out of descriptors, the control endpoint does not spin: with more control connections
/// waiting than the process can open, its CPU time grows by less than 30% of the wall time,
/// and it serves again once connections close.
#[test]
fn the_control_endpoint_does_not_spin_out_of_descriptors() {
    const NOFILE: u32 = 64;
    let root = root("control-emfile");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(["files", "serve", "--root", root.to_str().unwrap(), "--model", "event", "-d", "0"])
        .args(["--control-max-conns", "1000"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut server = Server::start(cmd, format!("files serve with ulimit -n {NOFILE}"));
    let addr = control(&server);
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..2 * NOFILE {
        let mut c = support::connect(addr);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        match control_cancel(&mut c, 1) {
            Some(Reply::CancelResult { .. }) => held.push(c),
            _ => {
                waiting.push(c);
                break;
            }
        }
    }
    assert!(held.len() < NOFILE as usize, "served {} control connections with {NOFILE} descriptors", held.len());
    for _ in 0..20 {
        waiting.push(support::connect(addr));
    }
    let (cpu_before, wall) = (cpu_time(server.pid()), Instant::now());
    // A measuring window, not synchronisation: how busy the server is while clients wait.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (cpu_time(server.pid()) - cpu_before, wall.elapsed());
    assert!(cpu < wall * 3 / 10, "the control endpoint spins out of descriptors: {cpu:?} of CPU in {wall:?}");
    assert!(server.is_running());
    drop(held);
    drop(waiting);
    assert!(support::eventually(Duration::from_secs(10), || {
        let mut c = support::connect(addr);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        matches!(control_cancel(&mut c, 2), Some(Reply::CancelResult { .. }))
    }));
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}
