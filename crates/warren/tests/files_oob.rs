//! Cancelling an upload out of band, both ways, under `thread`, `pool` and `event`: through the
//! control endpoint (also when every data worker is busy) and with TCP urgent data (out of line
//! and inline, streaming and with the server's receive window full), and the races around them.
//! Every cancel must leave no partial file and end the data connection with `Cancelled` and a
//! clean end of file.

#[macro_use]
mod support;
mod files_support;

use files_support::{Upload, cancel, conn, control, partials, root, serve};
use support::T;
use warren_fileserver::wire::{Outcome, Reply};

const HUGE: u64 = 64 << 30;

fn cancelled(reply: Reply, id: u64) {
    assert!(matches!(reply, Reply::Cancelled { id: got, .. } if got == id), "{reply:?}");
}

fn control_mid_stream(model: &str) {
    let root = root(&format!("control-{model}"));
    let server = serve(&root, model, &[]);
    let mut up = Upload::start(server.addr, "/huge", HUGE);
    up.send(8 << 20);
    let id = up.id;
    assert!(
        matches!(cancel(control(&server), id), Reply::CancelResult { id: got, outcome: Outcome::Stopped } if got == id)
    );
    assert_eq!(partials(&root), 0, "{model}: the partial file is gone when the cancel is answered");
    cancelled(up.reply(), id);
    up.finish();
    assert!(!root.join("huge").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

fn urgent(model: &str, inline: bool, stalled: bool) {
    let tag = format!("urgent-{model}-{inline}-{stalled}");
    let root = root(&tag);
    let mut extra = vec![];
    if inline {
        extra.push("--oob-inline");
    }
    if stalled {
        extra.extend(["--upload-rate", "4194304"]);
    }
    let server = serve(&root, model, &extra);
    let mut up = Upload::start(server.addr, "/huge", HUGE);
    if stalled {
        up.stall(128 * 1024);
    } else {
        up.send(8 << 20);
    }
    up.urgent();
    let id = up.id;
    cancelled(up.reply(), id);
    assert_eq!(partials(&root), 0, "{tag}: the partial file is gone when Cancelled arrives");
    // After the mark the connection speaks frames again.
    let mut stat = Vec::new();
    warren_fileserver::wire::Request::Stat { path: "/huge".into() }.encode(&mut stat);
    std::io::Write::write_all(&mut up.stream, &stat).unwrap();
    assert!(matches!(up.reply(), Reply::Error { .. }), "{tag}: nothing of the upload is visible");
    up.finish();
    std::fs::remove_dir_all(&root).unwrap();
}

fn races(model: &str) {
    let root = root(&format!("races-{model}"));
    let server = serve(&root, model, &[]);
    // An id no upload has: Unknown, and nothing is remembered of it.
    assert!(matches!(cancel(control(&server), 21), Reply::CancelResult { outcome: Outcome::Unknown, .. }));
    assert!(matches!(cancel(control(&server), 21), Reply::CancelResult { outcome: Outcome::Unknown, .. }));
    // After completion: too late, and the file stays.
    let mut id = 0;
    conn(server.addr).put_announced("/b", 3, &mut &b"abc"[..], |got| id = got).unwrap();
    assert!(matches!(cancel(control(&server), id), Reply::CancelResult { outcome: Outcome::Completed, .. }));
    assert_eq!(std::fs::read(root.join("b")).unwrap(), b"abc");
    std::fs::remove_dir_all(&root).unwrap();
}

macro_rules! oob_models {
    ($($model:ident),*) => {$(
        mod $model {
            #[test]
            fn control_endpoint_mid_stream() {
                super::control_mid_stream(stringify!($model));
            }
            #[test]
            fn urgent_out_of_line_streaming() {
                super::urgent(stringify!($model), false, false);
            }
            #[test]
            fn urgent_inline_streaming() {
                super::urgent(stringify!($model), true, false);
            }
            #[test]
            fn urgent_out_of_line_window_full() {
                super::urgent(stringify!($model), false, true);
            }
            #[test]
            fn urgent_inline_window_full() {
                super::urgent(stringify!($model), true, true);
            }
            #[test]
            fn cancel_races() {
                super::races(stringify!($model));
            }
        }
    )*};
}

oob_models!(thread, pool, event);

/// One pool worker, kept busy by three streaming uploads: the cancel of a fourth is still
/// answered, by the control thread.
#[test]
fn control_endpoint_works_while_every_pool_worker_is_busy() {
    let root = root("busy-pool");
    let server = serve(&root, "pool", &["--threads", "1"]);
    let (started, busy_started) = std::sync::mpsc::channel();
    let busy: Vec<_> = (0..3)
        .map(|i| {
            let (addr, started) = (server.addr, started.clone());
            std::thread::spawn(move || {
                let mut up = Upload::start(addr, &format!("/busy{i}"), HUGE);
                started.send(up.id).unwrap();
                // Until the server cancels it (at shutdown) or 64 MiB went.
                for _ in 0..64 {
                    if std::io::Write::write_all(&mut up.stream, &vec![1; 1 << 20]).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    // Every busy upload is connected and has sent its request before the one to cancel.
    let busy_ids: Vec<u64> = (0..3).map(|_| busy_started.recv_timeout(T).expect("a busy upload started")).collect();
    let mut up = Upload::start(server.addr, "/target", HUGE);
    up.send(1 << 20);
    let id = up.id;
    let reply = cancel(control(&server), id);
    assert!(matches!(reply, Reply::CancelResult { outcome: Outcome::Stopped, .. }), "{reply:?}");
    cancelled(up.reply(), id);
    assert!(!root.join("target").exists());
    // The busy uploads still have theirs; the cancelled one has none.
    let prefix = format!("{id:016x}-");
    let left = std::fs::read_dir(root.join(".warren/tmp")).unwrap().flatten();
    assert!(!left.into_iter().any(|e| e.file_name().to_string_lossy().starts_with(&prefix)));
    for id in busy_ids {
        cancel(control(&server), id);
    }
    drop(server);
    for t in busy {
        t.join().unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
