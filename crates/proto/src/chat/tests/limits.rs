//! Refused lines, limits, timeouts, shutdown and statistics.

use super::*;

#[test]
fn bad_lines_get_errors_and_the_connection_stays() {
    let mut sim = Sim::new();
    let a = sim.json_client();
    for (line, error) in [
        ("{\"cmd\":", "bad JSON"),
        ("[1,2]", "bad JSON: expected an object"),
        (r#"{"nick":"x"}"#, "missing \"cmd\" field"),
        (r#"{"cmd":"dance"}"#, "unknown command \"dance\""),
        (r#"{"cmd":"nick","nick":5}"#, "bad \"nick\": invalid type"),
        (r#"{"cmd":"join"}"#, "bad \"join\": missing field `channel`"),
        (r#"{"cmd":"say","text":"nobody hears"}"#, "you are on no channel"),
        (r##"{"cmd":"join","channel":"#a b"}"##, "invalid channel"),
    ] {
        sim.line(a, line);
        let events = sim.events(a);
        assert!(error_of(&events).starts_with(error), "{line}: {events:?}");
        assert!(!sim.is_closed(a));
    }
    sim.input(a, b"\xff\xfe\n");
    assert_eq!(error_of(&sim.events(a)), "line is not valid UTF-8");
    sim.line(a, r##"{"cmd":"join","channel":"#a"}"##);
    sim.events(a);
    sim.line(a, &Command::Say { channel: None, text: "x".repeat(MAX_TEXT + 1) }.to_json());
    assert_eq!(error_of(&sim.events(a)), "a message has at most 1000 bytes");
    sim.line(a, r#"{"cmd":"say","text":"  "}"#);
    assert_eq!(error_of(&sim.events(a)), "empty message");
    assert!(sim.logs.iter().any(|(l, s)| *l == Level::Error && s.contains("unknown command")));

    let p = sim.connect();
    sim.line(p, "/dance");
    assert_eq!(
        sim.take(p),
        "* welcome to warren chat (protocol 1); you are guest2. /help lists the commands\n\
         ! error: unknown command /dance; /help lists the commands\n",
        "the welcome comes first, even before an error about the first line"
    );
    sim.line(p, "/nick");
    assert_eq!(sim.take(p), "! error: usage: /nick <name> (one word)\n");
    sim.line(p, "/connect elsewhere");
    assert_eq!(sim.take(p), "! error: already connected\n");
    assert!(!sim.is_closed(p));
}

#[test]
fn a_long_line_or_a_foreign_version_closes() {
    let mut sim = Sim::with_limits(Limits { max_request: 64, ..Limits::default() });
    let a = sim.json_client();
    sim.input(a, &[b'x'; 40]);
    sim.input(a, &[b'x'; 40]);
    assert_eq!(error_of(&sim.events(a)), "line longer than 64 bytes; closing");
    assert!(sim.is_closed(a));
    let b = sim.connect();
    sim.line(b, r#"{"cmd":"hello","version":2}"#);
    assert_eq!(error_of(&sim.events(b)), "unsupported protocol version 2; this server speaks 1");
    assert!(sim.is_closed(b));
}

#[test]
fn idle_and_read_timeouts_say_bye() {
    let limits =
        Limits { idle_timeout: Duration::from_secs(60), read_timeout: Duration::from_secs(5), max_request: 4096 };
    let mut sim = Sim::with_limits(limits);
    let (a, b) = (sim.json_client(), sim.json_client());
    sim.advance(Duration::from_secs(30));
    sim.line(a, "");
    sim.advance(Duration::from_secs(30));
    assert!(sim.is_closed(b) && !sim.is_closed(a), "an empty line keeps a connection alive");
    assert_eq!(sim.events(b), [Event::Bye { message: "closing: idle timeout".into() }]);
    sim.input(a, b"{\"cmd\"");
    sim.advance(Duration::from_secs(4));
    assert!(!sim.is_closed(a));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.events(a), [Event::Bye { message: "closing: read timeout".into() }]);
    assert!(sim.is_closed(a));
}

#[test]
fn shutdown_notifies_everyone() {
    let mut sim = Sim::new();
    let (a, p) = (sim.json_client(), sim.connect());
    sim.line(p, "/join #a");
    sim.take(p);
    sim.shutdown();
    assert_eq!(sim.events(a), [Event::Shutdown { message: "server shutting down".into() }]);
    assert_eq!(sim.take(p), "! server shutting down\n");
    assert!(sim.is_closed(a) && sim.is_closed(p));
}

#[test]
fn stats_and_report() {
    let mut sim = Sim::with_limits(Limits { idle_timeout: Duration::from_secs(7200), ..Limits::default() });
    let (a, b) = (sim.json_client(), sim.json_client());
    sim.line(a, r##"{"cmd":"join","channel":"#a"}"##);
    sim.line(b, r##"{"cmd":"join","channel":"#a"}"##);
    sim.line(a, r#"{"cmd":"say","text":"one"}"#);
    sim.line(b, r#"{"cmd":"say","text":"two"}"#);
    sim.read_closed(b);
    sim.advance(Duration::from_secs(3725));
    sim.events(a);
    sim.line(a, r#"{"cmd":"stats"}"#);
    let stats = Event::Stats {
        users: 1,
        peak_users: 2,
        channels: 1,
        messages: 2,
        deliveries: 4,
        commands: 8,
        uptime_secs: 3725,
    };
    assert_eq!(sim.events(a), [stats]);
    assert_eq!(
        sim.hub.report(sim.now).unwrap(),
        "chat: 1 user now (peak 2), 1 channel, 2 messages relayed (4 deliveries), 8 commands, up 1h 2m 5s"
    );
}

#[test]
fn channel_limits() {
    let mut sim = Sim::new();
    let a = sim.json_client();
    for i in 0..MAX_CHANNELS_PER_USER {
        sim.line(a, &Command::Join { channel: format!("#c{i}") }.to_json());
    }
    sim.events(a);
    sim.line(a, r##"{"cmd":"join","channel":"#one-too-many"}"##);
    assert_eq!(error_of(&sim.events(a)), "you are on 10 channels already; /leave one first");
    let mut n = MAX_CHANNELS_PER_USER;
    for _ in 1..MAX_CHANNELS / MAX_CHANNELS_PER_USER {
        let id = sim.json_client();
        for _ in 0..MAX_CHANNELS_PER_USER {
            sim.line(id, &Command::Join { channel: format!("#c{n}") }.to_json());
            n += 1;
        }
    }
    let last = sim.json_client();
    sim.line(last, r##"{"cmd":"join","channel":"#new"}"##);
    assert_eq!(error_of(&sim.events(last)), "the server has 1000 channels already");
    sim.line(last, r##"{"cmd":"join","channel":"#c0"}"##);
    assert!(matches!(sim.events(last)[0], Event::Joined { users: 2, .. }), "existing channels stay open");
}

#[test]
fn a_reader_that_never_reads_is_dropped() {
    let mut sim = Sim::new();
    let (a, b) = (sim.json_client(), sim.json_client());
    sim.line(a, r##"{"cmd":"join","channel":"#a"}"##);
    sim.line(b, r##"{"cmd":"join","channel":"#a"}"##);
    let text = Command::Say { channel: None, text: "y".repeat(MAX_TEXT) }.to_json();
    let mut last = String::new();
    while !sim.is_closed(b) {
        sim.line(a, &text);
        last = sim.take(a);
    }
    assert!(sim.pending_len(b) > session::MAX_BACKLOG);
    assert!(last.ends_with("{\"event\":\"left\",\"channel\":\"#a\",\"nick\":\"guest2\",\"reason\":\"quit\"}\n"));
    assert!(sim.logs.iter().any(|(l, s)| *l == Level::Error && s.contains("not reading")));
}

#[test]
fn a_silent_connection_is_told_in_json() {
    let mut sim = Sim::new();
    let a = sim.connect();
    sim.advance(Duration::from_secs(200));
    let b = sim.connect();
    sim.advance(Duration::from_secs(100));
    assert_eq!(sim.events(a), [Event::Bye { message: "closing: idle timeout".into() }]);
    sim.shutdown();
    assert_eq!(sim.events(b), [Event::Shutdown { message: "server shutting down".into() }]);
    assert!(sim.hub.report(sim.now).unwrap().starts_with("chat: 0 users now (peak 0)"), "never users");
}
