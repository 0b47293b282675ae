//! The chat hub: nicknames, channels and statistics, shared by every session of a server.
//!
//! The hub is the only authority on names and membership: sessions forward what their users
//! ask as [`ChatRequest`]s and render whatever [`Event`]s come back, so two sessions can never
//! disagree about who is on a channel. Broadcasts are one event per recipient, in `SessionId`
//! order, which keeps the tests deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::text::{help_lines, stats_summary};
use super::wire::{
    ChannelInfo, Event, LeaveReason, PROTOCOL_VERSION, check_nick, clean_text, nick_key, normalize_channel,
};
use crate::{Hub, HubOutput, Nothing, SessionId};

/// The most channels a server holds at once; joining a new one beyond it is refused.
pub const MAX_CHANNELS: usize = 1000;

/// The most channels one user is on at once.
pub const MAX_CHANNELS_PER_USER: usize = 10;

/// The most nicknames a `names` event lists (its `users` field still counts them all).
pub const MAX_NAMES: usize = 100;

/// What a session asks of the hub on behalf of its user. Names arrive as typed: the hub
/// validates and normalizes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatRequest {
    /// Register (if new) and send a welcome with the user's nickname.
    Hello,
    /// Change nickname.
    Nick(String),
    /// List the channels.
    List,
    /// Join a channel, or make it current if already on it.
    Join(String),
    /// Leave the named channel, or the current one.
    Leave(Option<String>),
    /// Send text to the named channel, or the current one.
    Say { channel: Option<String>, text: String },
    /// The list of commands.
    Help,
    /// The statistics.
    Stats,
    /// Leave the chat: the hub drops the user, tells the channels, and answers `bye` last, so
    /// that the session closes only after every earlier answer has reached it.
    Quit,
}

#[derive(Debug)]
struct User {
    nick: String,
    /// The channels the user is on, in join order: the last one is the current channel.
    channels: Vec<String>,
}

/// The shared state of a chat server.
#[derive(Debug)]
pub struct ChatHub {
    started: Instant,
    users: BTreeMap<SessionId, User>,
    /// Nickname keys ([`nick_key`]) to their owners.
    nicks: BTreeMap<String, SessionId>,
    /// Channel names to members; a channel exists while it has members.
    channels: BTreeMap<String, BTreeSet<SessionId>>,
    next_guest: u64,
    peak_users: u64,
    messages: u64,
    deliveries: u64,
    commands: u64,
}

type Out = HubOutput<ChatHub>;

fn error(out: &mut Out, to: SessionId, message: impl Into<String>) {
    let message = message.into();
    out.push(to, Event::Error { message });
}

impl ChatHub {
    /// A hub whose uptime counts from `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            users: BTreeMap::new(),
            nicks: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_guest: 0,
            peak_users: 0,
            messages: 0,
            deliveries: 0,
            commands: 0,
        }
    }

    /// The statistics as a `stats` event.
    pub fn stats(&self, now: Instant) -> Event {
        Event::Stats {
            users: self.users.len() as u64,
            peak_users: self.peak_users,
            channels: self.channels.len() as u64,
            messages: self.messages,
            deliveries: self.deliveries,
            commands: self.commands,
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
        }
    }

    /// Register `id` under a fresh guest nickname unless known; whether it was new.
    fn register(&mut self, id: SessionId) -> bool {
        if self.users.contains_key(&id) {
            return false;
        }
        // Skip guest names a user chose for themselves.
        let nick = loop {
            self.next_guest += 1;
            let nick = format!("guest{}", self.next_guest);
            if !self.nicks.contains_key(&nick) {
                break nick;
            }
        };
        self.nicks.insert(nick.clone(), id);
        self.users.insert(id, User { nick, channels: Vec::new() });
        self.peak_users = self.peak_users.max(self.users.len() as u64);
        true
    }

    fn welcome(&self, id: SessionId, out: &mut Out) {
        let nick = self.users[&id].nick.clone();
        out.push(id, Event::Welcome { version: PROTOCOL_VERSION, nick });
    }

    fn nick(&mut self, id: SessionId, new: String, out: &mut Out) {
        if let Err(e) = check_nick(&new) {
            return error(out, id, format!("invalid nickname: {e}"));
        }
        let key = nick_key(&new);
        if self.nicks.get(&key).is_some_and(|&owner| owner != id) {
            return error(out, id, format!("nickname {new} is already in use"));
        }
        let user = self.users.get_mut(&id).expect("registered before any request");
        let old = std::mem::replace(&mut user.nick, new.clone());
        self.nicks.remove(&nick_key(&old));
        self.nicks.insert(key, id);
        // Tell the user, and each user sharing a channel with them, once.
        let mut to = BTreeSet::from([id]);
        if old != new {
            for channel in &user.channels {
                to.extend(&self.channels[channel]);
            }
        }
        for member in to {
            out.push(member, Event::Nick { old: old.clone(), new: new.clone() });
        }
    }

    fn join(&mut self, id: SessionId, name: &str, out: &mut Out) {
        let channel = match normalize_channel(name) {
            Ok(channel) => channel,
            Err(e) => return error(out, id, format!("invalid channel: {e}")),
        };
        let user = self.users.get_mut(&id).expect("registered before any request");
        let nick = user.nick.clone();
        if let Some(i) = user.channels.iter().position(|c| *c == channel) {
            // Already on it: make it current again, telling only this user.
            let channel = user.channels.remove(i);
            user.channels.push(channel.clone());
            let users = self.channels[&channel].len() as u32;
            return out.push(id, Event::Joined { channel, nick, users });
        }
        if user.channels.len() >= MAX_CHANNELS_PER_USER {
            return error(out, id, format!("you are on {MAX_CHANNELS_PER_USER} channels already; /leave one first"));
        }
        if !self.channels.contains_key(&channel) && self.channels.len() >= MAX_CHANNELS {
            return error(out, id, format!("the server has {MAX_CHANNELS} channels already"));
        }
        user.channels.push(channel.clone());
        let members = self.channels.entry(channel.clone()).or_default();
        members.insert(id);
        let users = members.len() as u32;
        for &member in members.iter() {
            out.push(member, Event::Joined { channel: channel.clone(), nick: nick.clone(), users });
        }
        let mut nicks: Vec<String> = members.iter().map(|m| self.users[m].nick.clone()).collect();
        nicks.sort();
        nicks.truncate(MAX_NAMES);
        out.push(id, Event::Names { channel, users, nicks });
    }

    /// The channel a command names, or the user's current one; `None` after sending an error.
    fn target(&self, id: SessionId, name: Option<&str>, out: &mut Out) -> Option<String> {
        let user = &self.users[&id];
        let channel = match name {
            Some(name) => match normalize_channel(name) {
                Ok(channel) => channel,
                Err(e) => {
                    error(out, id, format!("invalid channel: {e}"));
                    return None;
                }
            },
            None => match user.channels.last() {
                Some(channel) => channel.clone(),
                None => {
                    error(out, id, "you are on no channel: /join #name first");
                    return None;
                }
            },
        };
        if !user.channels.contains(&channel) {
            error(out, id, format!("you are not on {channel}"));
            return None;
        }
        Some(channel)
    }

    /// Take `id` off `channel`, telling the members (the leaver too, if still connected), and
    /// drop the channel once empty.
    fn part(&mut self, id: SessionId, nick: &str, channel: &str, reason: LeaveReason, out: &mut Out) {
        let Some(members) = self.channels.get_mut(channel) else {
            return;
        };
        if reason == LeaveReason::Quit {
            members.remove(&id);
        }
        for &member in members.iter() {
            let event = Event::Left { channel: channel.to_string(), nick: nick.to_string(), reason };
            out.push(member, event);
        }
        members.remove(&id);
        if members.is_empty() {
            self.channels.remove(channel);
        }
    }

    fn leave(&mut self, id: SessionId, name: Option<&str>, out: &mut Out) {
        if let Some(channel) = self.target(id, name, out) {
            let user = self.users.get_mut(&id).expect("registered before any request");
            user.channels.retain(|c| *c != channel);
            let nick = user.nick.clone();
            self.part(id, &nick, &channel, LeaveReason::Leave, out);
        }
    }

    /// Drop a user (gone, or quitting), telling the channels they were on.
    fn remove(&mut self, id: SessionId, out: &mut Out) {
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        self.nicks.remove(&nick_key(&user.nick));
        for channel in &user.channels {
            self.part(id, &user.nick, channel, LeaveReason::Quit, out);
        }
    }

    fn say(&mut self, id: SessionId, channel: Option<&str>, text: &str, out: &mut Out) {
        let Some(channel) = self.target(id, channel, out) else {
            return;
        };
        let text = match clean_text(text) {
            Ok(text) => text,
            Err(e) => return error(out, id, e),
        };
        let from = self.users[&id].nick.clone();
        let members = &self.channels[&channel];
        self.messages += 1;
        self.deliveries += members.len() as u64;
        for &member in members {
            let event = Event::Message { channel: channel.clone(), from: from.clone(), text: text.clone() };
            out.push(member, event);
        }
    }
}

impl Hub for ChatHub {
    type Request = ChatRequest;
    type Message = Event;
    type Done = Nothing;

    fn handle_request(&mut self, now: Instant, from: SessionId, request: ChatRequest, out: &mut Out) {
        self.commands += 1;
        // Sessions always say hello first; a hub reached otherwise still welcomes first.
        if self.register(from) && request != ChatRequest::Hello {
            self.welcome(from, out);
        }
        match request {
            ChatRequest::Hello => self.welcome(from, out),
            ChatRequest::Nick(nick) => self.nick(from, nick, out),
            ChatRequest::List => {
                let channels = self
                    .channels
                    .iter()
                    .map(|(name, members)| ChannelInfo { channel: name.clone(), users: members.len() as u32 })
                    .collect();
                out.push(from, Event::List { channels });
            }
            ChatRequest::Join(channel) => self.join(from, &channel, out),
            ChatRequest::Leave(channel) => self.leave(from, channel.as_deref(), out),
            ChatRequest::Say { channel, text } => self.say(from, channel.as_deref(), &text, out),
            ChatRequest::Help => out.push(from, Event::Help { lines: help_lines() }),
            ChatRequest::Stats => out.push(from, self.stats(now)),
            ChatRequest::Quit => {
                self.remove(from, out);
                out.push(from, Event::Bye { message: "bye".into() });
            }
        }
    }

    fn handle_leave(&mut self, _: Instant, id: SessionId, out: &mut Out) {
        self.remove(id, out);
    }

    fn report(&self, now: Instant) -> Option<String> {
        Some(format!("chat: {}", stats_summary(&self.stats(now))))
    }
}
