//! Fault: a peer that resets its connection while the server is writing a large answer, under
//! every model. The server must go on serving, and give back every descriptor it took.
//!
//! Like every fault test, it runs in a network namespace it makes for itself (root only; otherwise
//! on the host's loopback, saying so): see `warren_testkit::netns`.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{End, Server, T, connect, eventually, group_members, read_all};

/// The file served, far larger than the socket buffers, so that the server is mid-write.
const SIZE: usize = 1 << 20;
/// Resets per model, and what each client reads before resetting.
const RESETS: usize = 20;
const READ_BEFORE_RESET: usize = 16 * 1024;

fn docroot(model: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-faults-reset-{model}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), body()).unwrap();
    root
}

fn body() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

fn request(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    stream
}

/// Read a little of the answer, then reset: SO_LINGER 0 makes close send RST at once.
fn reset_mid_response(addr: SocketAddr) {
    let mut stream = request(addr);
    let mut buf = vec![0u8; READ_BEFORE_RESET];
    stream.read_exact(&mut buf).unwrap();
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}

/// A whole answer: the head, and the full body.
fn fetch_whole(addr: SocketAddr, model: &str) {
    let mut stream = request(addr);
    let (answer, end) = read_all(&mut stream, T);
    assert_eq!(end, End::Eof, "{model}: the answer ends cleanly");
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{model}: {:?}", String::from_utf8_lossy(&answer[..at]));
    assert!(answer[at..] == body()[..], "{model}: the body is whole ({} bytes)", answer.len() - at);
}

/// Open descriptors of the server and every process of its group (fork and prefork workers),
/// but for the served files: the docroot keeps the files it opened for the next request (its
/// bounded open-file cache), once per process, so a prefork worker that served its first
/// request during the resets holds one more file, not a leaked socket.
fn descriptors(server: &Server, root: &Path) -> usize {
    let mut pids = group_members(server.pid());
    pids.push(server.pid());
    pids.sort();
    pids.dedup();
    pids.iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten())
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| !target.starts_with(root) || target == root))
        .count()
}

fn check(model: &str) {
    // A loopback of the test's own: the servers it starts and its clients run in it.
    warren_testkit::netns::isolate_test();
    let root = docroot(model);
    let key = root.with_extension("key");
    let mut server =
        Server::serve("http", model, &["--root", root.to_str().unwrap(), "--cookie-key-file", key.to_str().unwrap()]);
    // One whole answer first, so that whatever a model opens on its first connection is counted.
    fetch_whole(server.addr, model);
    let mut baseline = 0;
    assert!(
        eventually(T, || {
            let now = descriptors(&server, &root);
            let settled = now == baseline;
            baseline = now;
            settled
        }),
        "{model}: the descriptor count settles"
    );

    for _ in 0..RESETS {
        reset_mid_response(server.addr);
    }
    assert!(server.is_running(), "{model}: the server survived {RESETS} resets");
    fetch_whole(server.addr, model);
    let mut now = 0;
    assert!(
        eventually(T, || {
            now = descriptors(&server, &root);
            now <= baseline
        }),
        "{model}: descriptors leaked: {now} open after the resets, {baseline} before"
    );
    let stopped = server.stop_clean();
    let (served, _) = stopped.counts();
    assert!(served >= RESETS as u64 + 2, "{model}: every connection counted: {}", stopped.stopped_line());
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&key);
}

per_model!(check);
