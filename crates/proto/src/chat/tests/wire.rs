//! The encodings on their own: JSON lines, the hub's postcard, typed lines, rendered text.

use super::*;

fn every_command() -> Vec<Command> {
    vec![
        Command::Hello { version: 1 },
        Command::Nick { nick: "bob".into() },
        Command::List {},
        Command::Join { channel: "#a".into() },
        Command::Leave { channel: None },
        Command::Leave { channel: Some("#a".into()) },
        Command::Say { channel: None, text: "hi \"there\"".into() },
        Command::Say { channel: Some("#a".into()), text: "hi".into() },
        Command::Quit {},
        Command::Help {},
        Command::Stats {},
    ]
}

fn every_event() -> Vec<Event> {
    vec![
        Event::Welcome { version: 1, nick: "guest1".into() },
        Event::Message { channel: "#a".into(), from: "bob".into(), text: "hi".into() },
        Event::Joined { channel: "#a".into(), nick: "bob".into(), users: 2 },
        Event::Names { channel: "#a".into(), users: 2, nicks: vec!["al".into(), "bob".into()] },
        Event::Left { channel: "#a".into(), nick: "bob".into(), reason: LeaveReason::Quit },
        Event::Nick { old: "guest1".into(), new: "bob".into() },
        Event::List { channels: vec![ChannelInfo { channel: "#a".into(), users: 2 }] },
        Event::Stats { users: 1, peak_users: 2, channels: 3, messages: 4, deliveries: 5, commands: 6, uptime_secs: 7 },
        Event::Help { lines: help_lines() },
        Event::Error { message: "no".into() },
        Event::Shutdown { message: "server shutting down".into() },
        Event::Bye { message: "bye".into() },
    ]
}

#[test]
fn json_lines_look_as_documented() {
    assert_eq!(Command::Leave { channel: None }.to_json(), r#"{"cmd":"leave"}"#);
    assert_eq!(Command::List {}.to_json(), r#"{"cmd":"list"}"#);
    assert_eq!(Command::Say { channel: None, text: "hi".into() }.to_json(), r#"{"cmd":"say","text":"hi"}"#);
    assert_eq!(
        Event::Message { channel: "#a".into(), from: "bob".into(), text: "hi".into() }.to_json(),
        r##"{"event":"message","channel":"#a","from":"bob","text":"hi"}"##
    );
    assert_eq!(
        Event::Left { channel: "#a".into(), nick: "bob".into(), reason: LeaveReason::Leave }.to_json(),
        r##"{"event":"left","channel":"#a","nick":"bob","reason":"leave"}"##
    );
    assert_eq!(
        Event::List { channels: vec![ChannelInfo { channel: "#a".into(), users: 2 }] }.to_json(),
        r##"{"event":"list","channels":[{"channel":"#a","users":2}]}"##
    );
    assert_eq!(
        Command::from_json(r#"{"cmd":"leave","channel":null,"extra":[1]}"#),
        Ok(Command::Leave { channel: None })
    );
}

#[test]
fn json_and_postcard_round_trip() {
    for command in every_command() {
        assert_eq!(Command::from_json(&command.to_json()), Ok(command));
    }
    for event in every_event() {
        assert_eq!(Event::from_json(&event.to_json()), Ok(event.clone()));
        let bytes = postcard::to_stdvec(&event).unwrap();
        assert_eq!(postcard::from_bytes::<Event>(&bytes).unwrap(), event);
    }
    for request in [ChatRequest::Leave(None), ChatRequest::Say { channel: Some("#a".into()), text: "x".into() }] {
        let bytes = postcard::to_stdvec(&request).unwrap();
        assert_eq!(postcard::from_bytes::<ChatRequest>(&bytes).unwrap(), request);
    }
}

#[test]
fn the_refusal_is_an_error_event() {
    let line = std::str::from_utf8(REFUSAL).unwrap();
    assert!(line.ends_with('\n'));
    assert_eq!(Event::from_json(line.trim_end()), Ok(Event::Error { message: "server busy, try again later".into() }));
    assert_eq!(Chat::default().refusal(), REFUSAL);
    assert_eq!(Chat::default().name(), "chat");
}

#[test]
fn typed_lines() {
    let cmd = |c| Ok(Typed::Command(c));
    assert_eq!(parse_typed("  "), Ok(Typed::Nothing));
    assert_eq!(parse_typed("/join #a"), cmd(Command::Join { channel: "#a".into() }));
    assert_eq!(parse_typed("/leave"), cmd(Command::Leave { channel: None }));
    assert_eq!(parse_typed("/Leave  #b "), cmd(Command::Leave { channel: Some("#b".into()) }));
    assert_eq!(parse_typed("/quit see you"), cmd(Command::Quit {}));
    assert_eq!(parse_typed(" hi /there"), cmd(Command::Say { channel: None, text: " hi /there".into() }));
    assert_eq!(parse_typed("//etc"), cmd(Command::Say { channel: None, text: "/etc".into() }));
    assert_eq!(parse_typed("/connect host"), Ok(Typed::Connect { server: "host".into(), port: None }));
    assert_eq!(parse_typed("/connect host 7000"), Ok(Typed::Connect { server: "host".into(), port: Some(7000) }));
    assert!(parse_typed("/connect host 70000").unwrap_err().starts_with("bad port"));
    assert_eq!(parse_typed("/join"), Err("usage: /join <channel>".into()));
    assert_eq!(parse_typed("/"), Err("unknown command /; /help lists the commands".into()));
}

#[test]
fn rendered_events() {
    let texts: Vec<String> = every_event().iter().map(render_text).collect();
    assert_eq!(texts[1], "[#a] <bob> hi");
    assert_eq!(texts[3], "* on #a (2 users): al bob");
    assert_eq!(texts[4], "* bob quit (#a)");
    assert_eq!(
        texts[7],
        "* stats: 1 user now (peak 2), 3 channels, 4 messages relayed (5 deliveries), 6 commands, up 7s"
    );
    assert_eq!(texts[9], "! error: no");
    let truncated = Event::Names { channel: "#a".into(), users: 300, nicks: vec!["x".into()] };
    assert_eq!(render_text(&truncated), "* on #a (300 users): x ...");
    let hostile = Event::Message { channel: "#a".into(), from: "e\u{1b}vil".into(), text: "\r\nfake".into() };
    assert_eq!(render_text(&hostile), "[#a] <e?vil> ??fake");
    assert_eq!(text::uptime(90_061), "1d 1h 1m 1s");
    assert_eq!(text::uptime(0), "0s");
}

#[test]
fn name_rules() {
    use crate::chat::wire::{check_nick, normalize_channel};
    assert_eq!(normalize_channel("Rust"), Ok("#rust".into()));
    assert_eq!(normalize_channel("##x"), Ok("##x".into()));
    assert!(normalize_channel("#").is_err());
    assert!(normalize_channel(&"a".repeat(MAX_CHANNEL)).is_err());
    assert!(normalize_channel(&"a".repeat(MAX_CHANNEL - 1)).is_ok());
    assert!(normalize_channel("a,b").is_err());
    assert!(check_nick("Zoë_99").is_ok());
    assert!(check_nick("/me").is_err());
    assert!(check_nick("tab\there").is_err());
}
