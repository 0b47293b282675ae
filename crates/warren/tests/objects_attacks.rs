//! Attacks on the object server's binary protocol, each beside a well-behaved client that must
//! still be served: a peer that never reads its replies, one that announces an endless frame,
//! and one that floods a connection with calls beyond `--max-in-flight`.

mod objects_support;
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use objects_support::{Objects, Raw, json_call};
use support::T;
use warren_rpc::wire::Outcome;

/// A well-behaved client is answered promptly.
fn others_are_served(objects: &Objects) {
    let start = Instant::now();
    let (status, body) = objects.post("HelloServer", "sayHello", "[]");
    assert_eq!((status, body.as_str()), (200, Some("Hello World!")));
    let mut raw = Raw::connect(objects.addr);
    raw.send(&json_call(1, "HelloServer", "sayHello", "[]", 0));
    assert_eq!(raw.reply(T).expect("a binary client is served").outcome, Outcome::Ok(b"\"Hello World!\"".to_vec()));
    assert!(start.elapsed() < Duration::from_secs(5), "served late: {:?}", start.elapsed());
}

/// Write `bytes` to the server from a thread (the server may stop reading): the thread ends
/// when everything is written or the stream is shut down.
fn write_behind(raw: &Raw, bytes: Vec<u8>) -> std::thread::JoinHandle<usize> {
    let mut stream = raw.stream.try_clone().unwrap();
    stream.set_write_timeout(None).unwrap();
    std::thread::spawn(move || {
        let mut written = 0;
        for chunk in bytes.chunks(64 * 1024) {
            if stream.write_all(chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    })
}

#[test]
fn a_peer_that_never_reads_costs_bounded_memory() {
    let objects = Objects::start("no-reader", &["--max-in-flight", "16"]);
    // A mailbox deep enough to take every call: only the connection's limits bound them.
    objects.add("Work", "nifty", "per-object:100000", false);
    let before = objects.rss_kib();
    // 4,000 calls whose answers are ~40 KB each: 160 MB if the server queued them all.
    let calls: Vec<u8> =
        (1..=4000).flat_map(|id| json_call(id, "Work", "execute", r#"[{"Squares":{"n":5000}}]"#, 0)).collect();
    let hog = Raw::connect(objects.addr);
    let writer = write_behind(&hog, calls);
    // Give the server every chance to take in what it will: until the calls stop counting up.
    let mut last = u64::MAX;
    let end = Instant::now() + T;
    loop {
        let (_, info) = objects_support::Http::connect(objects.http).request("GET", "/v1/objects/Work", &[], b"");
        let calls = info["calls"].as_u64().unwrap();
        if calls == last || Instant::now() >= end {
            break;
        }
        last = calls;
        std::thread::sleep(Duration::from_millis(200));
    }
    others_are_served(&objects);
    let grown = objects.rss_kib().saturating_sub(before);
    assert!(last < 2000, "the server took all {last} calls of a peer that reads nothing");
    assert!(grown < 48 * 1024, "the server grew {grown} KiB for one peer that reads nothing");
    hog.stream.shutdown(std::net::Shutdown::Both).unwrap();
    writer.join().unwrap();
    others_are_served(&objects);
}

#[test]
fn an_endless_frame_is_refused_at_its_length() {
    let objects = Objects::start("endless", &[]);
    for length in [u32::MAX, (16 << 20) + 1] {
        let mut raw = Raw::connect(objects.addr);
        let mut header = b"WO\x01".to_vec();
        header.extend_from_slice(&length.to_be_bytes());
        raw.send(&header);
        let start = Instant::now();
        assert!(raw.closed(T), "length {length}: the connection must close");
        assert!(start.elapsed() < Duration::from_secs(5), "length {length}: closed late");
        others_are_served(&objects);
    }
}

#[test]
fn calls_beyond_max_in_flight_wait_unread() {
    let objects = Objects::start("in-flight", &["--max-in-flight", "2"]);
    let mut raw = Raw::connect(objects.addr);
    // In one write: two slow calls, then a quick one. The quick one is read only when one of
    // the slow ones is done, so it is answered after it.
    let mut bytes = json_call(1, "NiftyObjectServer", "execute", r#"[{"Sleep":{"ms":500}}]"#, 0);
    bytes.extend(json_call(2, "NiftyObjectServer", "execute", r#"[{"Sleep":{"ms":500}}]"#, 0));
    bytes.extend(json_call(3, "HelloServer", "sayHello", "[]", 0));
    raw.send(&bytes);
    let first = raw.reply(T).expect("a reply");
    assert_ne!(first.id, 3, "the third call was read beyond the limit of two in flight");
    others_are_served(&objects);
    let mut ids: Vec<u64> = (0..2).map(|_| raw.reply(T).expect("a reply").id).collect();
    ids.push(first.id);
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}
