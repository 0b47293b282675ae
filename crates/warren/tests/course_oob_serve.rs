//! `warren serve oob`, Stevens' `oobrecv` as a served protocol, under every model that arms TCP
//! urgent data: `warren oob send` and the C `oobsend` (compiled with gcc) each see their bytes
//! reported in the lines `oobrecv` prints. Models that cannot arm urgent data refuse to serve it.

mod course;
mod support;

use std::process::{Command, Stdio};

use course::{SENDER_LINES, c_program, check_receiver};
use support::{Server, T, command, run};

/// `warren serve oob` under `model`, logging at its default level (the lines are info).
fn serve_oob(model: &str) -> Server {
    Server::spawn(&["serve", "oob", "--model", model, "--listen", "127.0.0.1:0"])
}

/// Wait for the server to report the end of the connection that just finished.
fn wait_for_eof(server: &mut Server, who: &str) {
    let eof = server.wait_stdout(|l| l == "received EOF", T);
    assert!(eof.is_some(), "{}: no `received EOF` for {who}", server.label);
}

fn both_senders_under(model: &str) {
    let mut server = serve_oob(model);
    let port = server.addr.port().to_string();

    let (status, out, err) = run(command(&["oob", "send", "127.0.0.1", &port, "--pause", "200ms"]), b"", T);
    assert!(status.success(), "{model}: warren oob send: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), SENDER_LINES, "{model}: the sender's lines");
    wait_for_eof(&mut server, "warren oob send");

    let sender = Command::new(c_program("oobsend"))
        .args(["127.0.0.1", &port, "200"])
        .stdin(Stdio::null())
        .output()
        .expect("oobsend");
    assert!(sender.status.success(), "{model}: oobsend: {}", String::from_utf8_lossy(&sender.stderr));
    assert_eq!(String::from_utf8_lossy(&sender.stdout).lines().collect::<Vec<_>>(), SENDER_LINES);
    wait_for_eof(&mut server, "the C oobsend");

    let stopped = server.stop_clean();
    let lines: Vec<String> = stopped.stdout.into_iter().filter(|l| !l.starts_with("warren: stopped")).collect();
    // One connection after the other: each one's lines end with its `received EOF`.
    let first_end = lines.iter().position(|l| l == "received EOF").expect("first EOF") + 1;
    check_receiver(&lines[..first_end], &format!("serve oob under {model}, from warren oob send"));
    check_receiver(&lines[first_end..], &format!("serve oob under {model}, from the C oobsend"));
}

macro_rules! arming_models {
    ($($model:ident),*) => {$(
        #[test]
        fn $model() {
            both_senders_under(stringify!($model));
        }
    )*};
}

/// Every model that arms urgent data (all but `green` and `hybrid`).
mod senders_under {
    use super::both_senders_under;
    arming_models!(iterative, thread, pool, fork, prefork, event);
}

#[test]
fn models_that_cannot_arm_urgent_data_refuse_oob() {
    for model in ["green", "hybrid"] {
        let (status, out, err) = run(command(&["serve", "oob", "--model", model, "--listen", "127.0.0.1:0"]), b"", T);
        assert!(!status.success(), "{model}: served oob: {out}");
        assert!(!out.contains("warren: serving"), "{model}: {out}");
        let want = format!(
            "oob needs a model that arms TCP urgent data (iterative, thread, pool, fork, prefork, event); {model} does not"
        );
        assert!(err.contains(&want), "{model}: {err}");
    }
}
