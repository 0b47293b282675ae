//! The registry's binary protocol: length-prefixed frames, each a request id and a postcard body.
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xD7
//! 1       1     version 3
//! 2       4     length N of what follows, big-endian (4 ≤ N ≤ the receiver's maximum)
//! 6       4     request id, big-endian (chosen by the client; answers carry it back)
//! 10      N-4   body: a `Request` or `Response` in postcard (the variant index as a varint)
//! ```
//!
//! The magic, version and length are [`warren_proto::frame`]'s framing with a two-byte prefix;
//! the request id and body are its frame body.
//!
//! Requests are answered in any order (they are pipelined); a `Watch` is answered by any number
//! of `Events` frames with its id, until an `Error` or the client's `Cancel`. `docs/registry.md`
//! spells out every body byte by byte.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_proto::frame::{self, Framing};

use crate::model::{Endpoint, Entry, Error, Event, LeaseId, Name, Revision};

pub const MAGIC: u8 = 0xD7;
/// 2: lease ids of 128 bits, and `Renew` carries the lease's token. 3: names in either case,
/// and `Lookup` is answered with the name as the registry spells it (`Found`).
pub const VERSION: u8 = 3;
/// Bytes before the request id.
pub const HEADER: usize = framing(0).header();
/// Bytes of the request id, which every frame's body starts with.
const ID: usize = 4;
/// The largest request frame a server accepts (after the header), by default.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The largest answer frame a client accepts (after the header).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Events per watch frame, at most (a revision's events are never split, so one revision may
/// go over it).
pub const EVENTS_PER_FRAME: usize = 256;

/// A client's request. The variant index is the operation code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// 0
    Lookup { name: Name },
    /// 1
    List { prefix: String },
    /// 2
    Bind { name: Name, token: String, endpoints: Vec<Endpoint> },
    /// 3
    Rebind { name: Name, token: String, endpoints: Vec<Endpoint> },
    /// 4
    Unbind { name: Name, token: String },
    /// 5
    Register { name: Name, token: String, endpoint: Endpoint, ttl_ms: u64 },
    /// 6: needs the token that registered the lease.
    Renew { lease: LeaseId, token: String },
    /// 7
    Release { lease: LeaseId, token: String },
    /// 8: answered by `Events` frames until an `Error` or a `Cancel`.
    Watch { prefix: String, from: Revision },
    /// 9: ends the watch started by request `watch`; answered by `Cancelled` with that id.
    Cancel { watch: u32 },
}

/// A server's answer. The variant index is the answer code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// 0: to `Lookup`: the name as the registry spells it, and its endpoints.
    Found { revision: Revision, entry: Entry },
    /// 1: to `List`.
    Entries { revision: Revision, entries: Vec<Entry> },
    /// 2: to `Bind`, `Rebind`, `Unbind` and `Release`: the revision of the write.
    Written { revision: Revision },
    /// 3: to `Register`.
    Leased { lease: LeaseId, ttl_ms: u64, revision: Revision },
    /// 4: to `Renew`.
    Renewed { ttl_ms: u64 },
    /// 5: a watch's events, in revision order.
    Events { events: Vec<Event> },
    /// 6: the watch with this id has ended at the client's request.
    Cancelled,
    /// 7: the request failed (or the watch ended); id 0 for a frame that could not be read.
    Error(Error),
}

/// A frame that cannot be read. The stream cannot be resynchronised after any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic byte {0:#04x} (not a warren registry peer)")]
    BadMagic(u8),
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("frame of {0} bytes is too short for a request id")]
    TooShort(usize),
}

/// The result of looking at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Not a whole frame yet: read more.
    Incomplete,
    /// A whole frame of `len` bytes (header included). Its body may still be malformed, which
    /// fails that request only.
    Frame { len: usize, id: u32, body: Result<T, Error> },
}

impl From<frame::FrameError> for FrameError {
    fn from(e: frame::FrameError) -> FrameError {
        match e {
            frame::FrameError::BadPrefix { at: 0, got } => FrameError::BadMagic(got),
            frame::FrameError::BadPrefix { got, .. } => FrameError::BadVersion(got),
            frame::FrameError::TooLarge { len, .. } => FrameError::TooLarge(len),
        }
    }
}

/// The framing of frames up to `max` bytes after the header.
const fn framing(max: usize) -> Framing {
    Framing { prefix: &[MAGIC, VERSION], max }
}

/// Decodes the frame at the front of `buf`, if it is all there.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<Decoded<T>, FrameError> {
    let framing = framing(max);
    // Refused as soon as the length arrives, as a length over `max` is.
    if let Some(len) = framing.declared_len(buf)?
        && len < ID
    {
        return Err(FrameError::TooShort(len));
    }
    let Some((frame, len)) = framing.split(buf)? else { return Ok(Decoded::Incomplete) };
    let (id, body) = frame.split_first_chunk::<ID>().expect("checked above");
    let body = match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(Error::Invalid("trailing bytes after the body".into())),
        Err(e) => Err(Error::Invalid(format!("malformed body: {e}"))),
    };
    Ok(Decoded::Frame { len, id: u32::from_be_bytes(*id), body })
}

/// Appends one frame to `out`; `TooLarge` (and nothing appended) if its body would pass `max`.
pub fn encode<T: Serialize>(id: u32, body: &T, max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let framing = framing(max);
    let start = framing.begin(out);
    out.extend_from_slice(&id.to_be_bytes());
    *out = postcard::to_extend(body, std::mem::take(out)).expect("registry messages always serialize");
    Ok(framing.finish(out, start)?)
}

/// Splits events into frame-sized runs without splitting a revision.
pub fn chunks(events: &[Event]) -> impl Iterator<Item = &[Event]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(EVENTS_PER_FRAME);
        while end < rest.len() && rest[end].revision == rest[end - 1].revision {
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::model::EventKind;

    fn register() -> Request {
        let endpoint = Endpoint::tcp(SocketAddr::from(([127, 0, 0, 1], 8080)));
        Request::Register { name: Name::new("web").unwrap(), token: "t".into(), endpoint, ttl_ms: 10_000 }
    }

    #[test]
    fn a_frame_is_magic_version_length_id_body() {
        let mut out = Vec::new();
        encode(7, &Request::Renew { lease: LeaseId(300), token: "t".into() }, MAX_REQUEST, &mut out).unwrap();
        // Renew is variant 6; 300 is the varint ac 02; the token is its length, then its bytes.
        assert_eq!(out, [0xD7, 3, 0, 0, 0, 9, 0, 0, 0, 7, 6, 0xac, 0x02, 1, b't']);
        for cut in 0..out.len() {
            assert_eq!(decode::<Request>(&out[..cut], MAX_REQUEST), Ok(Decoded::Incomplete), "{cut} bytes");
        }
        let body = Ok(Request::Renew { lease: LeaseId(300), token: "t".into() });
        assert_eq!(decode(&out, MAX_REQUEST), Ok(Decoded::Frame { len: out.len(), id: 7, body }));
    }

    /// The example in docs/registry.md, byte for byte.
    #[test]
    fn the_documented_lookup_is_exact() {
        let mut out = Vec::new();
        encode(1, &Request::Lookup { name: Name::new("Web").unwrap() }, MAX_REQUEST, &mut out).unwrap();
        assert_eq!(out, [0xD7, 3, 0, 0, 0, 9, 0, 0, 0, 1, 0, 3, b'W', b'e', b'b']);
        out.clear();
        let endpoints = vec![Endpoint::tcp(SocketAddr::from(([127, 0, 0, 1], 8080)))];
        let entry = Entry { name: Name::new("web").unwrap(), endpoints };
        encode(1, &Response::Found { revision: Revision(1), entry }, MAX_RESPONSE, &mut out).unwrap();
        let body = [0, 1, 3, b'w', b'e', b'b', 1, 0, 127, 0, 0, 1, 0x90, 0x3f, 0, 1, 0];
        assert_eq!(out[..10], [0xD7, 3, 0, 0, 0, 4 + body.len() as u8, 0, 0, 0, 1]);
        assert_eq!(out[10..], body);
    }

    #[test]
    fn frames_that_cannot_be_read_are_refused_early() {
        assert_eq!(decode::<Request>(b"GET / HTTP/1.1\r\n", MAX_REQUEST), Err(FrameError::BadMagic(b'G')));
        assert_eq!(decode::<Request>(&[MAGIC, 1], MAX_REQUEST), Err(FrameError::BadVersion(1)));
        assert_eq!(
            decode::<Request>(&[MAGIC, 2], MAX_REQUEST),
            Err(FrameError::BadVersion(2)),
            "before names had case"
        );
        let huge = [MAGIC, VERSION, 0, 1, 0, 1];
        assert_eq!(decode::<Request>(&huge, MAX_REQUEST), Err(FrameError::TooLarge(65537)), "before the body came");
        assert_eq!(decode::<Request>(&[MAGIC, VERSION, 0, 0, 0, 3], MAX_REQUEST), Err(FrameError::TooShort(3)));
    }

    #[test]
    fn a_bad_body_fails_only_its_request() {
        let mut out = Vec::new();
        encode(1, &register(), MAX_REQUEST, &mut out).unwrap();
        let name_at = out.iter().position(|&b| b == b'w').unwrap();
        out[name_at] = b' ';
        let Ok(Decoded::Frame { id: 1, body: Err(Error::Invalid(why)), .. }) = decode::<Request>(&out, MAX_REQUEST)
        else {
            panic!("an invalid name must fail the request");
        };
        assert!(why.contains("malformed"), "{why}");
        let mut long = Vec::new();
        encode(2, &Request::Cancel { watch: 1 }, MAX_REQUEST, &mut long).unwrap();
        long.push(0);
        long[5] += 1;
        assert!(matches!(decode::<Request>(&long, MAX_REQUEST), Ok(Decoded::Frame { body: Err(_), .. })));
    }

    #[test]
    fn an_answer_over_the_limit_is_not_sent() {
        let mut out = vec![1, 2];
        let entries = vec![Entry { name: Name::new("x").unwrap(), endpoints: vec![] }; 100];
        let big = Response::Entries { revision: Revision(1), entries };
        assert!(matches!(encode(1, &big, 50, &mut out), Err(FrameError::TooLarge(_))));
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn event_chunks_never_split_a_revision() {
        let event = |r| Event {
            revision: Revision(r),
            kind: EventKind::Put,
            name: Name::new("a").unwrap(),
            endpoint: Endpoint::tcp(SocketAddr::from(([127, 0, 0, 1], 1))),
        };
        let events: Vec<Event> = (0..EVENTS_PER_FRAME as u64 + 10).map(|i| event(1 + i / 20)).collect();
        let chunks: Vec<&[Event]> = chunks(&events).collect();
        assert_eq!(chunks.concat(), events);
        for pair in chunks.windows(2) {
            assert_ne!(pair[0].last().unwrap().revision, pair[1][0].revision);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic_and_frames_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Decoded::Frame { len, id, body: Ok(request) }) = decode::<Request>(&bytes, MAX_REQUEST) {
                // Postcard accepts overlong varints, so compare values, not bytes.
                let mut again = Vec::new();
                encode(id, &request, MAX_REQUEST, &mut again).unwrap();
                prop_assert!(again.len() <= len);
                let back = decode::<Request>(&again, MAX_REQUEST);
                prop_assert_eq!(back, Ok(Decoded::Frame { len: again.len(), id, body: Ok(request) }));
            }
            let mut framed = vec![MAGIC, VERSION];
            framed.extend_from_slice(&u32::try_from(bytes.len() + 4).unwrap().to_be_bytes());
            framed.extend_from_slice(&[0, 0, 0, 1]);
            framed.extend_from_slice(&bytes);
            let decoded = decode::<Request>(&framed, MAX_REQUEST);
            let is_whole_frame = matches!(decoded, Ok(Decoded::Frame { len, id: 1, .. }) if len == framed.len());
            prop_assert!(is_whole_frame);
        }
    }
}
