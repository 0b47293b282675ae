//! The course's Java time programs against warren, with a real JVM: its TimeClient reads
//! `warren timeserver` under every model, and `warren timeclient` reads its TimeServer, both
//! through `ObjectInputStream`/`ObjectOutputStream` and a serialized `java.util.Date`.

mod course;
mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use course::{Peer, java};
use support::{MODELS, Server, T, command, run};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// `Date.toString()` in UTC: `Mon Dec 07 04:01:23 UTC 2026`.
fn parse_java_utc(date: &str) -> OffsetDateTime {
    let format =
        format_description!("[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] UTC [year]");
    PrimitiveDateTime::parse(date, format)
        .unwrap_or_else(|e| panic!("{date:?} is not Date.toString() in UTC: {e}"))
        .assume_utc()
}

/// `when` lies within the second-rounded span from `before` to `after`.
fn assert_between(when: OffsetDateTime, before: SystemTime, after: SystemTime, what: &str) {
    let (before, after) = (OffsetDateTime::from(before), OffsetDateTime::from(after));
    assert!(
        when >= before.replace_nanosecond(0).unwrap() && when <= after,
        "{what}: {when} is not between {before} and {after}"
    );
}

#[test]
fn the_java_timeclient_reads_warren_timeserver_under_every_model() {
    for model in MODELS {
        let mut server = Server::spawn(&["timeserver", "0", "--model", model, "--delay", "200ms"]);
        let before = SystemTime::now();
        let out = java("TimeClient", &["127.0.0.1", &server.addr.port().to_string()], "UTC").output().expect("java");
        let after = SystemTime::now();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: the Java client failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let date = stdout
            .trim_end()
            .strip_prefix("Time on host 127.0.0.1 is ")
            .unwrap_or_else(|| panic!("{model}: not the course's line: {stdout:?}"));
        assert_between(parse_java_utc(date), before, after, model);
        let logged = server.wait_stdout(|l| l.starts_with("TimeServer: Received connect from 127.0.0.1: "), T);
        assert!(logged.is_some(), "{model}: no course log line");
        server.stop_clean();
    }
}

#[test]
fn warren_timeclient_reads_the_java_timeserver_at_once_in_the_local_zone() {
    let zone = "America/New_York";
    let mut server = java("TimeServer", &[], zone).spawn().expect("java TimeServer");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let server = Peer(server);
    let first = lines.next().expect("the Java server printed nothing").expect("read its stdout");
    let port = first.strip_prefix("port ").unwrap_or_else(|| panic!("{first:?}"));
    let mut client = command(&["timeclient", "127.0.0.1", port]);
    client.env("TZ", zone);
    let started = Instant::now();
    let (status, out, err) = run(client, b"", T);
    let took = started.elapsed();
    assert!(status.success(), "{status:?}: {err}");
    // The Java server holds the connection 4 s after its date: the client must not wait for it.
    assert!(took < Duration::from_secs(3), "the client waited {took:?} for the server to close");
    let sent = lines.next().expect("the Java server's line").expect("read its stdout");
    let sent = sent.strip_prefix("sent ").unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(out, format!("Time on host 127.0.0.1 is {sent}\n"), "Date.toString() in {zone}, byte for byte");
    drop(server);
}

#[test]
fn warren_timeclient_reads_each_format_without_waiting_for_the_close() {
    std::thread::scope(|s| {
        for format in ["java", "ctime", "text"] {
            s.spawn(move || read_one_format(format));
        }
    });
}

/// `warren timeclient` against `warren timeserver --format <format>`: the date, in the local
/// zone, long before the server's 4 s blocking call ends.
fn read_one_format(format: &str) {
    // Kolkata is 5:30 ahead all year round, so the ctime line's hour is known.
    let zone = "Asia/Kolkata";
    let mut cmd = command(&["timeserver", "0", "--model", "thread", "--delay", "4s", "--format", format]);
    cmd.env("TZ", zone);
    let server = Server::start(cmd, format!("timeserver --format {format}"));
    let mut client = command(&["timeclient", "localhost", &server.addr.port().to_string()]);
    client.env("TZ", zone);
    let (before, started) = (SystemTime::now(), Instant::now());
    let (status, out, err) = run(client, b"", T);
    let after = SystemTime::now();
    assert!(status.success(), "{format}: {status:?}: {err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{format}: the client waited for the close");
    let date = out.trim_end().strip_prefix("Time on host localhost is ").unwrap_or_else(|| panic!("{format}: {out:?}"));
    let kolkata = time::UtcOffset::from_hms(5, 30, 0).unwrap();
    let when = match format {
        "java" => {
            let f = format_description!(
                "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] IST [year]"
            );
            PrimitiveDateTime::parse(date, f).unwrap_or_else(|e| panic!("{date:?}: {e}")).assume_offset(kolkata)
        }
        "ctime" => {
            let f = format_description!(
                "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
            );
            assert_eq!(date.len(), 24, "ctime's 24 characters: {date:?}");
            PrimitiveDateTime::parse(date, f).unwrap_or_else(|e| panic!("{date:?}: {e}")).assume_offset(kolkata)
        }
        _ => {
            let f = format_description!(
                "[weekday], [month repr:long] [day padding:none], [year] [hour]:[minute]:[second]-UTC"
            );
            PrimitiveDateTime::parse(date, f).unwrap_or_else(|e| panic!("{date:?}: {e}")).assume_utc()
        }
    };
    assert_between(when, before, after, format);
    server.stop();
}

#[test]
fn timeserver_refuses_an_unknown_format() {
    let (status, _, err) = run(command(&["timeserver", "0", "--format", "xml"]), b"", T);
    assert!(!status.success());
    assert!(err.contains("want java, ctime or text"), "{err}");
}

/// A peer that accepts and then says `say` (nothing, if empty) and holds the connection.
fn foreign_peer(say: &'static [u8]) -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in accepting.incoming().flatten().take(4) {
            let _ = std::io::Write::write_all(&mut stream, say);
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    (listener, addr)
}

#[test]
fn warren_timeclient_gives_up_clearly_on_a_peer_that_is_no_time_server() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "did not answer within 1s; expected a serialized java.util.Date or a date line"),
        (b"\xAC\xED\x00\x05\x74\x00\x02hi", "sent a Java object that is not a java.util.Date"),
        (b"\x00\x01\x02\x03\n", "sent binary data, not a serialized java.util.Date or a date line"),
        (&[b'x'; 300], "sent 300 bytes without a line end"),
    ];
    for (say, want) in cases {
        let (_listener, addr) = foreign_peer(say);
        let started = Instant::now();
        let (status, _, err) =
            run(command(&["timeclient", "127.0.0.1", &addr.port().to_string(), "--timeout", "1s"]), b"", T);
        assert!(!status.success(), "{want}");
        assert!(started.elapsed() < Duration::from_secs(4), "{want}: took {:?}", started.elapsed());
        assert!(err.contains(&addr.to_string()) && err.contains(want), "{want}: {err}");
        assert!(!err.contains("os error"), "a raw OS error: {err}");
    }
}
