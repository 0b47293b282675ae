//! The plain-text face of the protocol: what a user types and what a user reads.
//!
//! Shared by the server's plain-text mode (so that a user with `nc` can chat) and by the
//! interactive client, so that both understand the same typed lines and print events alike.

use std::borrow::Cow;

use super::wire::{Command, Event, LeaveReason, MAX_NICK};

/// What one typed line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Typed {
    /// A blank line: nothing to do.
    Nothing,
    /// `/connect <server> [port]`: only a client acts on it.
    Connect { server: String, port: Option<u16> },
    /// A command for the server. Text not starting with `/` is `Say` to the current channel.
    Command(Command),
}

/// Parse a typed line: `/nick bob`, `/join #a`, `hello all`. A line starting with `//` is text
/// starting with `/`. Command names are case-insensitive; commands without arguments ignore
/// extra words (so `/quit see you` quits, as in IRC).
pub fn parse_typed(line: &str) -> Result<Typed, String> {
    if line.trim().is_empty() {
        return Ok(Typed::Nothing);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(say(line));
    };
    if rest.starts_with('/') {
        return Ok(say(rest));
    }
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let usage = |u: &str| Err(format!("usage: /{name} {u}"));
    let command = match (name.as_str(), args.as_slice()) {
        ("connect", [server]) => {
            return Ok(Typed::Connect { server: server.to_string(), port: None });
        }
        ("connect", [server, port]) => match port.parse() {
            Ok(port) => {
                return Ok(Typed::Connect { server: server.to_string(), port: Some(port) });
            }
            Err(_) => return Err(format!("bad port {port:?}: expected 1 to 65535")),
        },
        ("connect", _) => return usage("<server> [port]"),
        ("nick", [nick]) => Command::Nick { nick: nick.to_string() },
        ("nick", _) => return usage("<name> (one word)"),
        ("join", [channel]) => Command::Join { channel: channel.to_string() },
        ("join", _) => return usage("<channel>"),
        ("leave", []) => Command::Leave { channel: None },
        ("leave", [channel]) => Command::Leave { channel: Some(channel.to_string()) },
        ("leave", _) => return usage("[channel]"),
        ("list", _) => Command::List {},
        ("quit", _) => Command::Quit {},
        ("help", _) => Command::Help {},
        ("stats", _) => Command::Stats {},
        _ => {
            let shown: String = name.chars().take(MAX_NICK).collect();
            return Err(format!("unknown command /{shown}; /help lists the commands"));
        }
    };
    Ok(Typed::Command(command))
}

fn say(text: &str) -> Typed {
    Typed::Command(Command::Say { channel: None, text: text.to_string() })
}

/// The commands, as `/help` shows them.
pub fn help_lines() -> Vec<String> {
    [
        "/connect <server> [port]  connect to a server (the client's own command)",
        "/nick <name>              change your nickname (unique, up to 20 characters, one word)",
        "/list                     list the channels and how many users are on each",
        "/join <channel>           join a channel (created if new); it becomes your current one",
        "/leave [channel]          leave your current channel, or the named one",
        "/quit                     leave the chat and disconnect",
        "/help                     show this help",
        "/stats                    show the server's statistics",
        "anything else             goes to everyone on your current channel (// sends a leading /)",
    ]
    .map(String::from)
    .to_vec()
}

/// Render an event as text lines (joined by `\n`, no final newline), as a plain-text user
/// sees them: `[#a] <bob> hi` for messages, `* ...` for news, `! ...` for trouble. Control
/// characters in names and text become `?`, since the events may come from an untrusted server.
pub fn render_text(event: &Event) -> String {
    match event {
        Event::Welcome { version, nick } => {
            format!("* welcome to warren chat (protocol {version}); you are {}. /help lists the commands", clean(nick))
        }
        Event::Message { channel, from, text } => {
            format!("[{}] <{}> {}", clean(channel), clean(from), clean(text))
        }
        Event::Joined { channel, nick, users } => {
            format!("* {} joined {} ({})", clean(nick), clean(channel), plural(*users as u64, "user"))
        }
        Event::Names { channel, users, nicks } => {
            let names: Vec<Cow<str>> = nicks.iter().map(|n| clean(n)).collect();
            let more = if (nicks.len() as u64) < u64::from(*users) { " ..." } else { "" };
            let count = plural(u64::from(*users), "user");
            format!("* on {} ({count}): {}{more}", clean(channel), names.join(" "))
        }
        Event::Left { channel, nick, reason: LeaveReason::Leave } => {
            format!("* {} left {}", clean(nick), clean(channel))
        }
        Event::Left { channel, nick, reason: LeaveReason::Quit } => {
            format!("* {} quit ({})", clean(nick), clean(channel))
        }
        Event::Nick { old, new } => format!("* {} is now known as {}", clean(old), clean(new)),
        Event::List { channels } if channels.is_empty() => "* no channels yet: /join #name creates one".to_string(),
        Event::List { channels } => {
            let mut lines = vec![format!("* {}:", plural(channels.len() as u64, "channel"))];
            for c in channels {
                lines.push(format!("*   {} ({})", clean(&c.channel), plural(u64::from(c.users), "user")));
            }
            lines.join("\n")
        }
        Event::Stats { .. } => format!("* stats: {}", stats_summary(event)),
        Event::Help { lines } => lines.iter().map(|l| format!("* {}", clean(l))).collect::<Vec<_>>().join("\n"),
        Event::Error { message } => format!("! error: {}", clean(message)),
        Event::Shutdown { message } => format!("! {}", clean(message)),
        Event::Bye { message } => format!("* {}", clean(message)),
    }
}

/// A `stats` event as one phrase (the server prints it on shutdown too); empty for any other.
pub fn stats_summary(event: &Event) -> String {
    let Event::Stats { users, peak_users, channels, messages, deliveries, commands, uptime_secs } = event else {
        return String::new();
    };
    format!(
        "{} now (peak {peak_users}), {}, {} relayed ({deliveries} deliveries), {}, up {}",
        plural(*users, "user"),
        plural(*channels, "channel"),
        plural(*messages, "message"),
        plural(*commands, "command"),
        uptime(*uptime_secs)
    )
}

/// `s` with every control character replaced by `?`.
fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(s.chars().map(|c| if c.is_control() { '?' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// A duration in seconds as `2d 3h 4m 5s`, leading zero units left out.
pub fn uptime(secs: u64) -> String {
    let parts = [(secs / 86_400, "d"), (secs / 3600 % 24, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")];
    let first = parts.iter().position(|&(n, _)| n > 0).unwrap_or(3);
    parts[first..].iter().map(|(n, u)| format!("{n}{u}")).collect::<Vec<_>>().join(" ")
}
