//! kill -9: an upload is complete or absent, and the lease table comes back.

#[macro_use]
mod support;
mod files_support;

use files_support::{Upload, conn, partials, root, serve};
use nix::sys::signal::Signal;

#[test]
fn an_upload_killed_half_way_leaves_the_old_file_and_no_partial() {
    let root = root("crash-upload");
    let server = serve(&root, "thread", &[]);
    conn(server.addr).put("/f", 3, &mut &b"old"[..]).unwrap();
    let mut up = Upload::start(server.addr, "/f", 8 << 20);
    up.send(4 << 20);
    assert!(support::eventually(support::T, || partials(&root) == 1));
    let stopped = server.stop_with(Signal::SIGKILL);
    assert!(!stopped.status.success());
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"old", "the old file is whole");
    let server = serve(&root, "thread", &[]);
    assert_eq!(partials(&root), 0, "the partial file of the killed run is gone");
    assert_eq!(conn(server.addr).get("/f").unwrap().1, b"old");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn leases_survive_kill_9_and_the_callback_is_delivered_after_the_restart() {
    let root = root("crash-leases");
    let server = serve(&root, "pool", &["--lease", "1h"]);
    let mut writer = conn(server.addr);
    writer.put("/f", 2, &mut &b"v1"[..]).unwrap();
    let mut reader = conn(server.addr);
    let me = reader.hello(0, [0; 16]).unwrap();
    assert_eq!(reader.get("/f").unwrap().1, b"v1");
    drop((reader, writer));
    server.stop_with(Signal::SIGKILL);

    let server = serve(&root, "pool", &["--lease", "1h"]);
    conn(server.addr).put("/f", 2, &mut &b"v2"[..]).unwrap();
    // The reader comes back: the change it missed is called back before the welcome.
    let mut reader = conn(server.addr);
    reader.hello(me.client, me.key).unwrap();
    assert_eq!(reader.take_callbacks(), ["/f"]);
    // Delivered once: the next hello owes nothing.
    let mut again = conn(server.addr);
    again.hello(me.client, me.key).unwrap();
    assert!(again.take_callbacks().is_empty());
    let stopped = server.stop_clean();
    assert!(stopped.stdout.iter().any(|l| l.starts_with("files: ")), "{:?}", stopped.stdout);
    std::fs::remove_dir_all(&root).unwrap();
}
