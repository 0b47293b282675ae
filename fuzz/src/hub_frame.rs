//! `hub_frame`: the hub process's frame decoder (`fork` and `prefork` models) on arbitrary
//! bytes, and the frame codec's round trip on arbitrary values.
//!
//! Input: any bytes. They are decoded, frame after frame, as every frame type the hub socket
//! carries: `Up<ChatRequest>`, `Down<Event>`, `Up<NextGame>`, `Down<Game>` and `Up<()>` /
//! `Down<()>` (the report exchange). The same bytes also build a few arbitrary chat frames,
//! which are encoded one after the other and decoded back from the stream in chunks.
//!
//! Checks:
//! - no panic, whatever the length prefix or body;
//! - `Ok(None)` leaves the buffer alone and only when the frame is incomplete; `TooLarge` only
//!   for a length over `MAX_FRAME`, buffer untouched; a decoded or malformed frame consumes
//!   exactly its `4 + length` bytes;
//! - a decoded frame encodes and decodes back to itself;
//! - any value encodes to one frame (a 4-byte big-endian length then the body) that decodes
//!   back to it, even after other frames and split into arbitrary chunks.

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warren_models::fuzzing::{Down, FrameError, MAX_FRAME, Up, decode_frame, encode_frame};
use warren_proto::SessionId;
use warren_proto::chat::{ChannelInfo, ChatRequest, Event, LeaveReason};
use warren_proto::pingpong::{Game, NextGame};

use crate::{Chunker, Rng};

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    decode_all::<Up<ChatRequest>>(data);
    decode_all::<Down<Event>>(data);
    decode_all::<Up<NextGame>>(data);
    decode_all::<Down<Game>>(data);
    decode_all::<Up<()>>(data);
    decode_all::<Down<()>>(data);

    let mut u = Unstructured::new(data);
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    while !u.is_empty() && ups.len() + downs.len() < 8 {
        let Ok(up_next) = bool::arbitrary(&mut u) else { break };
        let ok = if up_next { up(&mut u).map(|f| ups.push(f)) } else { down(&mut u).map(|f| downs.push(f)) };
        if ok.is_err() {
            break;
        }
    }
    let chunking = data.first().copied().unwrap_or(0);
    round_trip(&ups, chunking);
    round_trip(&downs, chunking);
}

/// The length prefix of the frame at the front of `buf`.
fn prefix(buf: &[u8]) -> Option<usize> {
    Some(u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize)
}

fn decode_all<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) {
    let mut buf = data.to_vec();
    loop {
        let before = buf.clone();
        let len = prefix(&before);
        match decode_frame::<T>(&mut buf) {
            Ok(Some(frame)) => {
                let len = len.expect("a frame decoded from under 4 bytes");
                assert!(len <= MAX_FRAME);
                assert_eq!(buf[..], before[4 + len..], "a decoded frame did not consume exactly its bytes");
                // Encoding is canonical for what decoding accepts, up to trailing bytes postcard
                // ignores: re-encoding gives a frame that decodes to the same value.
                let mut again = Vec::new();
                encode_frame(&frame, &mut again);
                let back = decode_frame::<T>(&mut again).expect("a re-encoded frame fails").expect("incomplete");
                assert!(again.is_empty());
                assert_eq!(format!("{back:?}"), format!("{frame:?}"), "a decoded frame does not round trip");
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete frame changed the buffer");
                assert!(len.is_none_or(|len| before.len() < 4 + len), "a complete frame was left undecoded");
                return;
            }
            Err(FrameError::Frame(warren_proto::frame::FrameError::TooLarge { len: n, .. })) => {
                assert_eq!(Some(n), len);
                assert!(n > MAX_FRAME, "a frame of {n} bytes refused as too large");
                assert_eq!(buf, before, "a refused frame changed the buffer");
                return;
            }
            Err(FrameError::Frame(e)) => panic!("the hub's frames have no prefix to get wrong: {e}"),
            Err(FrameError::Malformed(_)) => {
                let len = len.expect("a malformed frame under 4 bytes");
                assert_eq!(buf[..], before[4 + len..], "a malformed frame did not consume exactly its bytes");
                // The hub drops such a peer; decoding on still must not panic.
            }
        }
    }
}

fn round_trip<T: Serialize + DeserializeOwned + Debug>(frames: &[T], chunking: u8) {
    let mut stream = Vec::new();
    for frame in frames {
        let start = stream.len();
        encode_frame(frame, &mut stream);
        let len = prefix(&stream[start..]).expect("a frame without its length");
        assert_eq!(stream.len() - start, 4 + len, "the length prefix does not match the body");
        assert!(len <= MAX_FRAME);
    }
    let mut input = Vec::new();
    let mut got = Vec::new();
    for chunk in Chunker::new(chunking).split(&mut Rng::new(u64::from(chunking)), &stream) {
        input.extend_from_slice(chunk);
        while let Some(frame) = decode_frame::<T>(&mut input).expect("an encoded frame fails to decode") {
            got.push(format!("{frame:?}"));
        }
    }
    assert!(input.is_empty(), "bytes left after the last frame");
    let want: Vec<String> = frames.iter().map(|f| format!("{f:?}")).collect();
    assert_eq!(got, want, "frames do not round trip");
}

fn up(u: &mut Unstructured<'_>) -> arbitrary::Result<Up<ChatRequest>> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => Up::Open(SessionId(u64::arbitrary(u)?)),
        1 => Up::Request(request(u)?),
        _ => Up::Report,
    })
}

fn down(u: &mut Unstructured<'_>) -> arbitrary::Result<Down<Event>> {
    Ok(match u.int_in_range(0..=1u8)? {
        0 => Down::Message(event(u)?),
        _ => Down::Report(Option::<String>::arbitrary(u)?),
    })
}

fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<ChatRequest> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => ChatRequest::Hello,
        1 => ChatRequest::Nick(String::arbitrary(u)?),
        2 => ChatRequest::List,
        3 => ChatRequest::Join(String::arbitrary(u)?),
        4 => ChatRequest::Leave(Option::<String>::arbitrary(u)?),
        5 => ChatRequest::Say { channel: Option::<String>::arbitrary(u)?, text: String::arbitrary(u)? },
        6 => ChatRequest::Help,
        7 => ChatRequest::Stats,
        _ => ChatRequest::Quit,
    })
}

fn event(u: &mut Unstructured<'_>) -> arbitrary::Result<Event> {
    let s = |u: &mut Unstructured<'_>| String::arbitrary(u);
    Ok(match u.int_in_range(0..=11u8)? {
        0 => Event::Welcome { version: u32::arbitrary(u)?, nick: s(u)? },
        1 => Event::Message { channel: s(u)?, from: s(u)?, text: s(u)? },
        2 => Event::Joined { channel: s(u)?, nick: s(u)?, users: u32::arbitrary(u)? },
        3 => Event::Names { channel: s(u)?, users: u32::arbitrary(u)?, nicks: Vec::<String>::arbitrary(u)? },
        4 => Event::Left {
            channel: s(u)?,
            nick: s(u)?,
            reason: if bool::arbitrary(u)? { LeaveReason::Leave } else { LeaveReason::Quit },
        },
        5 => Event::Nick { old: s(u)?, new: s(u)? },
        6 => {
            let n = u.int_in_range(0..=4usize)?;
            let mut channels = Vec::with_capacity(n);
            for _ in 0..n {
                channels.push(ChannelInfo { channel: s(u)?, users: u32::arbitrary(u)? });
            }
            Event::List { channels }
        }
        7 => Event::Stats {
            users: u64::arbitrary(u)?,
            peak_users: u64::arbitrary(u)?,
            channels: u64::arbitrary(u)?,
            messages: u64::arbitrary(u)?,
            deliveries: u64::arbitrary(u)?,
            commands: u64::arbitrary(u)?,
            uptime_secs: u64::arbitrary(u)?,
        },
        8 => Event::Help { lines: Vec::<String>::arbitrary(u)? },
        9 => Event::Error { message: s(u)? },
        10 => Event::Shutdown { message: s(u)? },
        _ => Event::Bye { message: s(u)? },
    })
}
