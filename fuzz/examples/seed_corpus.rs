//! Writes the seed corpus: `cd fuzz && cargo run --example seed_corpus`.
//!
//! Realistic inputs for each target (chat sessions in both modes, recorded pingpong games,
//! valid hub frames) plus a few known edge cases. Files are named for what they hold and are
//! overwritten; inputs libFuzzer finds go elsewhere (see `docs/fuzzing.md`).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use warren_fuzz::pingpong_session::client_seed;
use warren_models::fuzzing::{Down, Up, encode_frame};
use warren_proto::chat::{ChannelInfo, ChatRequest, Event};
use warren_proto::pingpong::{Client, Game, GameCounter, NextGame, Options, PingPong};
use warren_proto::{Action, ConnInfo, Hub, Limits, Output, Service, Session, SessionId};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// `settings` then the scripts joined by `--` lines.
fn script(settings: u8, scripts: &[&str]) -> Vec<u8> {
    let mut data = vec![settings];
    data.extend_from_slice(scripts.join("--\n").as_bytes());
    data
}

const JSON_TOUR: &str = concat!(
    "{\"cmd\":\"hello\",\"version\":1}\n",
    "{\"cmd\":\"nick\",\"nick\":\"alice\"}\n",
    "{\"cmd\":\"join\",\"channel\":\"#rust\"}\n",
    "{\"cmd\":\"say\",\"text\":\"hi all\"}\n",
    "{\"cmd\":\"say\",\"channel\":\"#rust\",\"text\":\"tabs\\tand\\nnewlines\"}\n",
    "{\"cmd\":\"list\"}\n",
    "{\"cmd\":\"stats\"}\n",
    "{\"cmd\":\"help\"}\n",
    "{\"cmd\":\"leave\"}\n",
    "{\"cmd\":\"quit\"}\n",
);

const PLAIN_TOUR: &str = "/nick bob\r\n/join #a\r\nhello there\r\n//slash text\r\n/list\r\n/leave #a\r\n/stats\r\n/help\r\n/quit see you\r\n";

fn chat() {
    let t = "chat_session";
    write(t, "json-tour", &script(0x07, &[JSON_TOUR]));
    write(t, "plain-tour-small-chunks", &script(0x12, &[PLAIN_TOUR]));
    write(
        t,
        "two-users-mixed-modes",
        &script(
            0x1a,
            &[
                "{\"cmd\":\"nick\",\"nick\":\"alice\"}\n{\"cmd\":\"join\",\"channel\":\"#a\"}\n{\"cmd\":\"say\",\"text\":\"hi bob\"}\n",
                "/join #A\nhi alice\n/nick carol\n/join #b\n/list\n",
            ],
        ),
    );
    write(
        t,
        "four-users-refusals",
        &script(
            0x05,
            &[
                "{\"cmd\":\"frobnicate\"}\n{\"cmd\":42}\n{bad json\n[1,2]\n{\"cmd\":\"join\"}\n{\"cmd\":\"hello\",\"version\":1}\n",
                "/nick guest1\n/nick a_nickname_much_too_long_for_anyone\n/nick #chan\n/join\n/join #a,b\n/connect host\n/what\n",
                "/join #1\n/join #2\n/join #3\n/join #4\n/join #5\n/join #6\n/join #7\n/join #8\n/join #9\n/join #10\n/join #11\n/leave #nope\n",
                "{\"cmd\":\"hello\",\"version\":2}\n",
            ],
        ),
    );
    let flood: String = (0..40).map(|i| format!("message number {i} to everyone on the channel\n")).collect();
    write(t, "slow-reader", &script(0x47, &["/join #a\n", &format!("/join #a\n{flood}")]));
    write(
        t,
        "late-hub",
        &script(
            0x83,
            &[
                "/join #a\nearly words\n/quit\n",
                "{\"cmd\":\"join\",\"channel\":\"#a\"}\n{\"cmd\":\"say\",\"text\":\"x\"}\n",
            ],
        ),
    );
    write(t, "line-too-long", &script(0x27, &[&format!("/join #a\n{}\nnever read\n", "x".repeat(100))]));
    let mut garbage = vec![0x01];
    garbage.extend_from_slice(b"\xff\xfe bad utf-8\n\0\x1b[31m red\n\r\n\n/join #\xc3\xa9t\xc3\xa9\n\xe2\x80\xa8\n");
    write(t, "garbage-bytes", &garbage);
    write(t, "timeouts-partial-line", &script(0x0c, &["/join #a\nhel", "lo\n/join #a\nstill here\n"]));
    write(t, "empty-connection", &script(0x10, &["", "/quit\n"]));

    let t = "chat_wire";
    for (name, text) in [
        ("json-hello", "{\"cmd\":\"hello\",\"version\":1}"),
        ("json-say", "{\"cmd\":\"say\",\"channel\":\"#a\",\"text\":\"a\\nb\\u001b[31m\\u00e9\"}"),
        ("json-leave", "{\"cmd\":\"leave\",\"extra\":[1,{\"x\":null}]}"),
        ("json-unknown", "{\"cmd\":\"frobnicate\",\"nick\":\"x\"}"),
        ("json-not-object", "[\"cmd\",\"join\"]"),
        (
            "plain-commands",
            "/nick bob\n/JOIN #a\nhello\n//slash\n/leave\n/connect example.org 6667\n/connect h 99999\n/quit bye\n",
        ),
        ("event-welcome", "{\"event\":\"welcome\",\"version\":1,\"nick\":\"guest1\"}"),
        ("event-names", "{\"event\":\"names\",\"channel\":\"#a\",\"users\":3,\"nicks\":[\"a\",\"b\\u0007\"]}"),
        ("event-list", "{\"event\":\"list\",\"channels\":[{\"channel\":\"#a\",\"users\":2}]}"),
        (
            "event-stats",
            "{\"event\":\"stats\",\"users\":1,\"peak_users\":2,\"channels\":1,\"messages\":5,\"deliveries\":9,\"commands\":12,\"uptime_secs\":90061}",
        ),
        ("event-left", "{\"event\":\"left\",\"channel\":\"#a\",\"nick\":\"bob\",\"reason\":\"quit\"}"),
        ("channel-name", "##Rust-Lang"),
    ] {
        write(t, name, text.as_bytes());
    }
}

/// Play one game between a server session and a client core with zero delay and at most
/// `max_lines` lines each way; return (bytes the client sent, bytes the server sent).
fn record_game(settings: u8, options: &Options, max_lines: usize) -> (Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let limits = Limits::default();
    let service = PingPong { limits: limits.clone(), options: options.clone() };
    let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: u64::from(settings) };
    let mut server = service.new_session(&info, now);
    let mut client = Client::new(options, &limits, client_seed(settings), now);
    let mut hub = GameCounter::default();
    let (mut so, mut co) = (Output::<NextGame>::new(), Output::new());
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    server.handle_open(now, &mut so);
    client.handle_open(now, &mut co);
    loop {
        let mut actions = Vec::new();
        so.take_actions(&mut actions);
        for action in actions {
            if let Action::Hub(request) = action {
                let mut out = Vec::new();
                hub.handle_request(now, SessionId(1), request, &mut out);
                for (_, Game(game)) in out {
                    server.handle_message(now, Game(game), &mut so);
                }
            }
        }
        let (c, s) = (co.pending().to_vec(), so.pending().to_vec());
        co.consume(c.len());
        so.consume(s.len());
        let lines = |b: &[u8]| b.iter().filter(|&&x| x == b'\n').count();
        if c.is_empty() && s.is_empty() || lines(&to_server) >= max_lines {
            break;
        }
        if !c.is_empty() && !so.is_closed() {
            to_server.extend_from_slice(&c);
            server.handle_input(now, &c, &mut so);
        }
        if !s.is_empty() && !co.is_closed() {
            to_client.extend_from_slice(&s);
            client.handle_input(now, &s, &mut co);
        }
    }
    (to_server, to_client)
}

fn pingpong() {
    let t = "pingpong_session";
    let three = Options { delay: Duration::ZERO, hits: Some(3), ..Options::default() };
    let endless = Options { delay: Duration::ZERO, hits: None, ..Options::default() };
    for (name, settings, options, max_lines) in [
        ("game-3-hits", 0x42u8, &three, 100),
        ("game-3-hits-pipelined-refused", 0x47, &three, 100),
        ("game-3-hits-bytewise-half-close", 0x50, &three, 100),
        ("game-3-hits-chunks", 0x43, &three, 100),
        ("game-endless-cut", 0x07, &endless, 24),
        ("game-endless-cut-clock", 0x0a, &endless, 24),
    ] {
        let (to_server, to_client) = record_game(settings, options, max_lines);
        let mut data = vec![settings];
        data.extend_from_slice(&to_server);
        data.extend_from_slice(b"--\n");
        data.extend_from_slice(&to_client);
        write(t, name, &data);
    }
    for (name, data) in [
        ("wrong-version", &b"\x07PINGPONG 2\n--\nPINGPONG 2 GAME 1\n"[..]),
        (
            "ties-forever",
            b"\x87PINGPONG 3\nTOSS 0\nTOSS 0\nTOSS 0\nTOSS 0\n--\nPINGPONG 3 GAME 9\nTOSS 0\nTOSS 0\nTOSS 0\n",
        ),
        ("refused", b"\x17ERROR server busy\n--\nERROR server busy\n"),
        ("garbage", b"\x01PINGPONG 3\r\nTOSS +1\nTOSS 18446744073709551616\n\xff\n"),
        ("too-long", b"\x07PINGPONG 3\nTOSS 00000000000000000000000000000000000000000000000000000000000000000001\n"),
        ("delay-and-timeouts", b"\x68PINGPONG 3\nTOSS 1\nBALL\nPONG 1\n--\nPINGPONG 3 GAME 1\nTOSS 0\nPING 1\n"),
    ] {
        write(t, name, data);
    }

    let t = "pingpong_wire";
    for (name, data) in [
        ("hello", &b"PINGPONG 3"[..]),
        ("welcome-max", b"PINGPONG 3 GAME 18446744073709551615"),
        ("toss-leading-zeros", b"TOSS 007"),
        ("ball", b"BALL"),
        ("ping", b"PING 1"),
        ("pong", b"PONG 18"),
        ("bye", b"BYE"),
        ("error", b"ERROR server busy"),
        ("error-empty", b"ERROR"),
        ("error-space", b"ERROR  two spaces"),
        ("bad-sign", b"TOSS +1"),
        ("too-many-words", b"PINGPONG 3 GAME 1 2 3 4 5"),
        ("transcript", b"PINGPONG 3\nPINGPONG 3 GAME 1\nTOSS 0\nTOSS 1\nBALL\nPING 1\nPONG 1\nBYE\n"),
    ] {
        write(t, name, data);
    }
}

fn frames() {
    let t = "hub_frame";
    let mut open = Vec::new();
    encode_frame(&Up::<ChatRequest>::Open(SessionId((4242 << 32) | 1)), &mut open);
    write(t, "up-open", &open);
    let mut chat_up = open.clone();
    for request in [
        ChatRequest::Hello,
        ChatRequest::Nick("alice".into()),
        ChatRequest::Join("#rust".into()),
        ChatRequest::Say { channel: None, text: "hi all".into() },
        ChatRequest::Leave(Some("#rust".into())),
        ChatRequest::List,
        ChatRequest::Quit,
    ] {
        encode_frame(&Up::Request(request), &mut chat_up);
    }
    write(t, "up-chat-session", &chat_up);
    let mut chat_down = Vec::new();
    for event in [
        Event::Welcome { version: 1, nick: "guest1".into() },
        Event::Joined { channel: "#rust".into(), nick: "alice".into(), users: 2 },
        Event::Names { channel: "#rust".into(), users: 2, nicks: vec!["alice".into(), "bob".into()] },
        Event::Message { channel: "#rust".into(), from: "bob".into(), text: "hello".into() },
        Event::List { channels: vec![ChannelInfo { channel: "#rust".into(), users: 2 }] },
        Event::Bye { message: "bye".into() },
    ] {
        encode_frame(&Down::Message(event), &mut chat_down);
    }
    encode_frame(&Down::<Event>::Report(Some("chat: 2 users now (peak 2)".into())), &mut chat_down);
    write(t, "down-chat-events", &chat_down);
    let mut game = Vec::new();
    encode_frame(&Up::<NextGame>::Open(SessionId(7)), &mut game);
    encode_frame(&Up::Request(NextGame), &mut game);
    encode_frame(&Down::Message(Game(u64::MAX)), &mut game);
    write(t, "pingpong-frames", &game);
    let mut report = Vec::new();
    encode_frame(&Up::<()>::Report, &mut report);
    encode_frame(&Down::<()>::Report(None), &mut report);
    write(t, "report", &report);
    write(t, "too-large", &[0x00, 0x10, 0x00, 0x01, 0x00]);
    write(t, "truncated", &chat_up[..chat_up.len() - 3]);
    write(t, "malformed-body", &[0, 0, 0, 3, 9, 9, 9, 0, 0, 0, 0]);
}

fn lines() {
    let t = "lines";
    for (name, data) in [
        ("crlf-and-partial", &b"\x40\x03hello\r\nworld\n\npartial"[..]),
        ("json-lines", b"\x40\x07{\"cmd\":\"join\",\"channel\":\"#a\"}\n{\"cmd\":\"say\",\"text\":\"hi\"}\n"),
        ("zero-limit", b"\x00\x01\n\r\n\n"),
        ("pingpong", b"\x40\x02PINGPONG 3\nTOSS 1\nBALL\nPONG 1\nBYE\n"),
        ("at-the-limit", b"\x08\x0012345678\r\n1234567\r\r\n123456789\n"),
        ("over-limit-unfinished", b"\x04\x0512345"),
    ] {
        write(t, name, data);
    }
}

/// DNS queries: `[settings] query`, settings bit 0 for TCP, bits 1-2 the server's EDNS size.
fn dns() {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    let query = |name: &str, qtype: RecordType| {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message
    };
    let edns = |mut message: Message, payload: u16, version: u8| {
        let mut edns = Edns::new();
        edns.set_max_payload(payload).set_version(version);
        message.edns = Some(edns);
        message
    };
    let seed = |name: &str, settings: u8, message: &Message| {
        write("dns_answer", name, &[&[settings], message.to_vec().unwrap().as_slice()].concat());
    };
    seed("a-udp", 0, &query("web.warren.", RecordType::A));
    seed("a-edns-1232", 2, &edns(query("web.warren.", RecordType::A), 1232, 0));
    seed("a-mixed-case", 0, &query("WeB.wArReN.", RecordType::A));
    seed("a-truncated-udp", 0, &query("big.warren.", RecordType::A));
    seed("a-edns-4096-server-4096", 4, &edns(query("big.warren.", RecordType::A), 4096, 0));
    seed("a-tcp-all", 1, &query("big.warren.", RecordType::A));
    seed("aaaa", 0, &query("dual.warren.", RecordType::AAAA));
    seed("any", 0, &query("dual.warren.", RecordType::ANY));
    seed("srv", 2, &edns(query("dual.warren.", RecordType::SRV), 1232, 0));
    seed("srv-duplicates", 0, &query("dup.warren.", RecordType::SRV));
    seed("srv-many-udp", 0, &query("big.warren.", RecordType::SRV));
    seed("address-name", 0, &query("0a000001.addr.warren.", RecordType::A));
    seed("nodata", 0, &query("down.warren.", RecordType::A));
    seed("nxdomain", 2, &edns(query("nobody.warren.", RecordType::A), 1232, 0));
    seed("apex-soa", 0, &query("warren.", RecordType::SOA));
    seed("refused-other-zone", 0, &query("example.com.", RecordType::A));
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    seed("refused-chaos", 0, &chaos);
    seed("badvers", 0, &edns(query("web.warren.", RecordType::A), 1232, 1));
    let mut notify = query("warren.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    seed("notimp-notify", 0, &notify);
    seed("notimp-axfr", 1, &query("warren.", RecordType::AXFR));
    let mut two = query("web.warren.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("dual.warren.").unwrap(), RecordType::A));
    seed("formerr-two-questions", 0, &two);
    let cut = query("web.warren.", RecordType::A).to_vec().unwrap();
    write("dns_answer", "formerr-cut", &[&[0], &cut[..cut.len() - 3]].concat());
    let mut response = query("web.warren.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    seed("no-answer-response", 0, &response);
    write("dns_answer", "no-answer-short", &[0, 0x12, 0x34, 0, 0, 0, 1]);
}

/// Registry frames: a pipelined stream of every request, every answer, and edge cases.
fn registry() {
    use warren_registry::wire::{MAX_REQUEST, Request, Response, encode};
    use warren_registry::{Endpoint, Entry, Error, Event, EventKind, LeaseId, Name, Revision};
    let t = "registry_wire";
    let name = Name::new("web.eu").unwrap();
    let mut endpoint = Endpoint::tcp(([127, 0, 0, 1], 8080).into());
    endpoint.meta.insert("zone".into(), "a".into());
    let v6 = Endpoint::tcp("[::1]:443".parse().unwrap());
    let requests = [
        Request::Lookup { name: name.clone() },
        Request::List { prefix: "web".into() },
        Request::Bind { name: name.clone(), token: "t".into(), endpoints: vec![endpoint.clone(), v6.clone()] },
        Request::Rebind { name: name.clone(), token: "t".into(), endpoints: vec![v6.clone()] },
        Request::Unbind { name: name.clone(), token: "t".into() },
        Request::Register { name: name.clone(), token: "t".into(), endpoint: endpoint.clone(), ttl_ms: 10_000 },
        Request::Renew { lease: LeaseId(7), token: "t".into() },
        Request::Release { lease: LeaseId(7), token: "t".into() },
        Request::Watch { prefix: String::new(), from: Revision(3) },
        Request::Cancel { watch: 9 },
    ];
    let mut stream = Vec::new();
    for (id, request) in (1..).zip(&requests) {
        encode(id, request, MAX_REQUEST, &mut stream).unwrap();
    }
    write(t, "requests", &stream);
    let event = Event { revision: Revision(4), kind: EventKind::Delete, name: name.clone(), endpoint: v6.clone() };
    let answers = [
        Response::Found {
            revision: Revision(2),
            entry: Entry { name: name.clone(), endpoints: vec![endpoint.clone()] },
        },
        Response::Entries { revision: Revision(2), entries: vec![Entry { name: name.clone(), endpoints: vec![v6] }] },
        Response::Written { revision: Revision(3) },
        Response::Leased { lease: LeaseId(7), ttl_ms: 10_000, revision: Revision(4) },
        Response::Renewed { ttl_ms: 10_000 },
        Response::Events { events: vec![event] },
        Response::Cancelled,
        Response::Error(Error::Compacted { oldest: Revision(2) }),
        Response::Error(Error::NotBound(name)),
    ];
    let mut stream = Vec::new();
    for (id, answer) in (1..).zip(&answers) {
        encode(id, answer, MAX_REQUEST, &mut stream).unwrap();
    }
    write(t, "answers", &stream);
    write(t, "bad-magic", b"GET / HTTP/1.1\r\n\r\n");
    write(t, "bad-version", &[0xD7, 2, 0, 0, 0, 4, 0, 0, 0, 1]);
    write(t, "too-large", &[0xD7, 1, 0, 1, 0, 0]);
    write(t, "too-short", &[0xD7, 1, 0, 0, 0, 3, 0, 0, 0]);
    write(t, "unknown-op-then-renew", &[0xD7, 1, 0, 0, 0, 5, 0, 0, 0, 1, 0x7f, 0xD7, 1, 0, 0, 0, 6, 0, 0, 0, 2, 6, 1]);
    write(t, "bad-name", &[0xD7, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 3, b'W', b'e', b'b']);
    write(t, "truncated", &stream[..stream.len() / 2]);
}

/// The HTTP proxy's heads and chunked bodies: settings byte first (0 request, 1 response, 5 the
/// answer to a HEAD, 3 + split << 3 a chunked body).
fn proxy_head() {
    write("proxy_head", "request-get", b"\x00GET /a?b=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\nGET /next HTTP/1.1\r\n");
    write("proxy_head", "request-chunked-post", b"\x00POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nTE: trailers\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    write("proxy_head", "request-http10", b"\x00GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    write(
        "proxy_head",
        "response-length",
        b"\x01HTTP/1.1 200 OK\r\nContent-Length: 4\r\nKeep-Alive: timeout=5\r\n\r\nbody",
    );
    write(
        "proxy_head",
        "response-chunked-and-length",
        b"\x01HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
    );
    write(
        "proxy_head",
        "response-head-method",
        b"\x05HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\r\n",
    );
    write(
        "proxy_head",
        "chunked-body",
        b"+5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: t\r\n\r\nGET",
    );
}

fn main() {
    chat();
    pingpong();
    frames();
    lines();
    dns();
    registry();
    proxy_head();
}
