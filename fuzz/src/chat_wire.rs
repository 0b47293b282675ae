//! `chat_wire`: the chat protocol's decoders on arbitrary strings: the JSON command and event
//! decoders, the plain-text command parser, the name rules and the text renderer.
//!
//! Input: any bytes, taken as UTF-8 (invalid sequences replaced, so every input is a string).
//!
//! Checks:
//! - no panic;
//! - a decoded command or event encodes to JSON that decodes back to it;
//! - a typed line's command survives the same JSON round trip (what a JSON client and a
//!   plain-text user ask is the same command);
//! - a rendered event has no control character but the `\n` between its lines;
//! - the name rules are idempotent: a normalized channel normalizes to itself, cleaned text
//!   cleans to itself and holds no control character, an accepted nickname is accepted again.

use warren_proto::chat::wire::{check_nick, clean_text, normalize_channel};
use warren_proto::chat::{Command, Event, Typed, parse_typed, render_text};

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(command) = Command::from_json(text) {
        round_trip_command(&command);
    }
    if let Ok(event) = Event::from_json(text) {
        let json = event.to_json();
        assert_eq!(Event::from_json(&json).as_ref(), Ok(&event), "event JSON round trip: {json}");
        check_rendered(&event);
    }
    // Also each line, as the session hands them over.
    for line in text.split('\n') {
        match parse_typed(line) {
            Ok(Typed::Command(command)) => round_trip_command(&command),
            Ok(Typed::Connect { server, .. }) => assert!(!server.is_empty() && !server.contains(char::is_whitespace)),
            Ok(Typed::Nothing) => assert!(line.trim().is_empty(), "a non-blank line parsed as nothing: {line:?}"),
            Err(e) => assert!(e.len() < 256, "an error message of {} bytes", e.len()),
        }
        if line.len() <= 4096 {
            let _ = Command::from_json(line);
        }
    }

    if let Ok(channel) = normalize_channel(text) {
        assert!(channel.starts_with('#'));
        assert_eq!(normalize_channel(&channel).as_ref(), Ok(&channel), "channel normalization is not idempotent");
    }
    if let Ok(clean) = clean_text(text) {
        assert!(!clean.chars().any(char::is_control), "cleaned text holds a control character: {clean:?}");
        assert_eq!(clean_text(&clean).as_ref(), Ok(&clean), "text cleaning is not idempotent");
    }
    if check_nick(text).is_ok() {
        assert!(!text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
    // Whatever a hostile server sends, a plain-text client prints clean lines.
    for event in [
        Event::Message { channel: text.into(), from: text.into(), text: text.into() },
        Event::Help { lines: text.split('\n').map(String::from).collect() },
        Event::Error { message: text.into() },
    ] {
        check_rendered(&event);
    }
}

fn round_trip_command(command: &Command) {
    let json = command.to_json();
    assert_eq!(Command::from_json(&json).as_ref(), Ok(command), "command JSON round trip: {json}");
}

fn check_rendered(event: &Event) {
    let text = render_text(event);
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "rendered event holds a control character: {text:?}");
}
