//! The chat protocol's commands and events, and their JSON encoding.
//!
//! One Rust type serves both the JSON lines on the socket and the hub's messages, which cross a
//! Unix socket encoded with postcard in the `fork` model. Postcard cannot decode serde's
//! internally tagged enums (`{"event":"nick",...}` needs a self-describing format), so the
//! types are plain externally tagged enums (`{"nick":{...}}`) and [`to_json`] and
//! [`from_json`] move the variant name into, and out of, a `cmd` or `event` field. Every
//! variant has named fields (possibly none) so that each one is a JSON object. [`Command`]
//! never crosses the hub socket (sessions send [`ChatRequest`](super::ChatRequest)s), so it
//! alone may skip absent fields.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version, sent in `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest nickname, in characters.
pub const MAX_NICK: usize = 20;

/// The longest channel name, in characters, its leading `#` included.
pub const MAX_CHANNEL: usize = 32;

/// The longest message text, in bytes.
pub const MAX_TEXT: usize = 1000;

/// What a client asks, one per line. The JSON form is `{"cmd":"<variant>", <fields>}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Announce the protocol version (optional; answered with a welcome).
    Hello { version: u32 },
    /// Change nickname.
    Nick { nick: String },
    /// List the channels and their user counts.
    List {},
    /// Join a channel, creating it if needed; it becomes the current channel.
    Join { channel: String },
    /// Leave the named channel, or the current one.
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// Send text to the named channel, or the current one.
    Say {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        text: String,
    },
    /// Leave the chat and disconnect.
    Quit {},
    /// Ask for the list of commands.
    Help {},
    /// Ask for the server's statistics.
    Stats {},
}

/// The names [`Command`] variants take in JSON, to tell an unknown command from a bad one.
const COMMANDS: [&str; 9] = ["hello", "nick", "list", "join", "leave", "say", "quit", "help", "stats"];

/// Why someone left a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    /// They asked to (`/leave`).
    Leave,
    /// Their connection ended (`/quit`, a timeout, a dropped connection).
    Quit,
}

/// One line of a channel listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// The channel's name, `#` included.
    pub channel: String,
    /// How many users are on it.
    pub users: u32,
}

/// What the server tells a client, one per line. The JSON form is
/// `{"event":"<variant>", <fields>}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The answer to the first line: the protocol version and the nickname given.
    Welcome { version: u32, nick: String },
    /// Someone said something on a channel (the sender gets its own message back too).
    Message { channel: String, from: String, text: String },
    /// Someone joined a channel; `users` counts them after the join.
    Joined { channel: String, nick: String, users: u32 },
    /// Who is on a channel, sent to a user who joins it; `nicks` may be cut short of `users`.
    Names { channel: String, users: u32, nicks: Vec<String> },
    /// Someone left a channel.
    Left { channel: String, nick: String, reason: LeaveReason },
    /// Someone (you, or someone sharing a channel with you) changed nickname.
    Nick { old: String, new: String },
    /// The channels and their user counts, sorted by name.
    List { channels: Vec<ChannelInfo> },
    /// The server's statistics.
    Stats {
        users: u64,
        peak_users: u64,
        channels: u64,
        messages: u64,
        deliveries: u64,
        commands: u64,
        uptime_secs: u64,
    },
    /// The list of commands, one per line.
    Help { lines: Vec<String> },
    /// A command failed or a line was refused.
    Error { message: String },
    /// The server is stopping; the connection closes next.
    Shutdown { message: String },
    /// The server closes this connection (after `/quit`, or a timeout).
    Bye { message: String },
}

/// Encode a value of [`Command`] (with `tag` `"cmd"`) or [`Event`] (`"event"`) as one JSON
/// line, newline excluded, the tag first and the fields in declaration order.
pub fn to_json<T: Serialize>(tag: &str, value: &T) -> String {
    // serde_json writes `{"<variant>":{<fields>}}`; splice the tag into the inner object rather
    // than go through a `Value`, whose map would sort the fields and bury the tag.
    let json = serde_json::to_string(value).unwrap_or_default();
    let split = json.strip_prefix("{\"").and_then(|rest| rest.split_once("\":")).and_then(|(name, fields)| {
        let fields = fields.strip_suffix('}')?.strip_prefix('{')?;
        Some((name, fields))
    });
    match split {
        Some((name, "}")) => format!("{{\"{tag}\":\"{name}\"}}"),
        Some((name, fields)) => format!("{{\"{tag}\":\"{name}\",{fields}"),
        // Unreachable for the types above, whose variants all have named fields.
        None => format!("{{\"{tag}\":\"invalid\"}}"),
    }
}

/// Decode one JSON line holding a `tag` field naming the variant. Unknown fields are ignored,
/// so that later versions may add some.
pub fn from_json<T: DeserializeOwned>(tag: &str, line: &str) -> Result<T, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("bad JSON: expected an object".into());
    };
    let name = match fields.remove(tag) {
        Some(Value::String(name)) => name,
        Some(_) => return Err(format!("\"{tag}\" must be a string")),
        None => return Err(format!("missing \"{tag}\" field")),
    };
    let mut wrapped = Map::new();
    wrapped.insert(name.clone(), Value::Object(fields));
    serde_json::from_value(Value::Object(wrapped)).map_err(|e| format!("bad \"{name}\": {e}"))
}

impl Command {
    /// The JSON line for this command, newline excluded.
    pub fn to_json(&self) -> String {
        to_json("cmd", self)
    }

    /// Parse a JSON command line.
    pub fn from_json(line: &str) -> Result<Command, String> {
        from_json("cmd", line).map_err(|e| match unknown_command(line) {
            Some(name) => format!("unknown command \"{name}\"; try {{\"cmd\":\"help\"}}"),
            None => e,
        })
    }
}

/// The `cmd` of a JSON line when it is a string naming no command.
fn unknown_command(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    let name = value.get("cmd")?.as_str()?;
    (!COMMANDS.contains(&name)).then(|| name.chars().take(MAX_NICK).collect())
}

impl Event {
    /// The JSON line for this event, newline excluded.
    pub fn to_json(&self) -> String {
        to_json("event", self)
    }

    /// Parse a JSON event line (the client's side).
    pub fn from_json(line: &str) -> Result<Event, String> {
        from_json("event", line)
    }
}

/// Check a nickname: 1 to [`MAX_NICK`] characters, none of them blank or control characters,
/// not starting with `#` (a channel) or `/` (a command).
pub fn check_nick(nick: &str) -> Result<(), String> {
    let len = nick.chars().count();
    if len == 0 || len > MAX_NICK {
        return Err(format!("a nickname has 1 to {MAX_NICK} characters"));
    }
    if nick.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a nickname has no spaces or control characters".into());
    }
    if nick.starts_with(['#', '/']) {
        return Err("a nickname cannot start with # or /".into());
    }
    Ok(())
}

/// The key under which a nickname is unique: `Bob` and `bob` are the same user, as in IRC.
pub fn nick_key(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// The canonical form of a channel name: `#` prefixed if missing, ASCII lowercased (channel
/// names are case-insensitive, as in IRC). At most [`MAX_CHANNEL`] characters, `#` included,
/// no blanks, commas or control characters.
pub fn normalize_channel(name: &str) -> Result<String, String> {
    let bare = name.strip_prefix('#').unwrap_or(name);
    let len = bare.chars().count() + 1;
    if bare.is_empty() || len > MAX_CHANNEL {
        return Err(format!("a channel name has 1 to {} characters after the #", MAX_CHANNEL - 1));
    }
    if bare.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',') {
        return Err("a channel name has no spaces, commas or control characters".into());
    }
    Ok(format!("#{}", bare.to_ascii_lowercase()))
}

/// Message text as relayed: control characters (tabs, escapes, a `\n` sent in JSON) become
/// spaces, so that no message can forge lines or drive a terminal in a plain-text client.
pub fn clean_text(text: &str) -> Result<String, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("a message has at most {MAX_TEXT} bytes"));
    }
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.trim().is_empty() {
        return Err("empty message".into());
    }
    Ok(text)
}
