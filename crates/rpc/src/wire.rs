//! The binary framing, byte by byte in docs/rpc.md: length-prefixed postcard frames
//! ([`warren_proto::frame`]) carrying calls, replies and cancellations, multiplexed by call id.
//! Both ends may call: a server calls back objects its client exported on the same connection,
//! so a reply answers the call with that id that the *receiver* of the reply sent.

use serde::{Deserialize, Serialize};
use warren_proto::frame::{FrameError, Framing};

use crate::error::{Code, RpcError};

/// Every frame starts with `W`, `O` and the wire version.
pub const FRAMING: Framing = Framing { prefix: b"WO\x01", max: MAX_FRAME };

/// The largest frame body: 16 MiB.
pub const MAX_FRAME: usize = 16 << 20;

/// One message on the binary connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Call(Call),
    Reply(Reply),
    /// The caller gave up on the call with this id: the callee stops it if it can and sends
    /// no reply (one already on its way is dropped by the caller).
    Cancel(u64),
    /// The client's credential, for servers that admit only callers holding one; sent first.
    /// No answer: calls made without a good one fail `Unauthenticated`.
    Auth(String),
}

/// A call of `method` on `object`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the caller, unique among its calls in flight on this connection.
    pub id: u64,
    /// The object's name on the server (case-insensitive).
    pub object: String,
    /// The interface the caller speaks, and its version.
    /// Empty: whatever the object implements (generic callers: `warren call`, the HTTP path).
    pub interface: String,
    /// 0 with an empty interface.
    pub version: u32,
    pub method: String,
    /// Arguments, result and error in JSON instead of postcard: for callers that do not know
    /// the interface's types.
    pub json: bool,
    /// Milliseconds the caller still waits, from when the frame was sent; 0: no deadline.
    pub timeout_ms: u32,
    /// The arguments: the method's parameters as one tuple (postcard, or a JSON array).
    pub args: Vec<u8>,
}

/// The answer to call `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub outcome: Outcome,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The method's result, postcard-encoded.
    Ok(Vec<u8>),
    /// The method's own error, postcard-encoded as the interface's error type.
    App(Vec<u8>),
    /// The platform's error.
    Err(RpcError),
}

/// Append `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = FRAMING.begin(out);
    postcard::to_io(frame, &mut *out).expect("a Vec takes any write");
    FRAMING.finish(out, start)
}

/// The frame at the front of `buf` and the bytes it took, or `None` while it is incomplete.
/// An error leaves the stream unusable: the connection must close.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, RpcError> {
    let protocol = |e: String| RpcError::new(Code::Protocol, e);
    let Some((body, used)) = FRAMING.split(buf).map_err(|e| protocol(e.to_string()))? else { return Ok(None) };
    match postcard::from_bytes(body) {
        Ok(frame) => Ok(Some((frame, used))),
        Err(e) => Err(protocol(format!("malformed frame: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn call(id: u64) -> Frame {
        Frame::Call(Call {
            id,
            object: "HelloServer".into(),
            interface: "Hello".into(),
            version: 1,
            method: "sayHello".into(),
            json: false,
            timeout_ms: 250,
            args: vec![],
        })
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let frames = [
            call(1),
            Frame::Reply(Reply { id: 1, outcome: Outcome::Ok(vec![12]) }),
            Frame::Reply(Reply { id: 2, outcome: Outcome::Err(RpcError::new(Code::Overloaded, "full")) }),
            Frame::Cancel(3),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            encode(f, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        let mut at = 0;
        // Fed a byte at a time, as a slow peer would send them.
        for end in 1..=buf.len() {
            if let Some((frame, used)) = decode(&buf[at..end]).unwrap() {
                got.push(frame);
                at += used;
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn the_documented_bytes_of_a_cancel() {
        let mut buf = Vec::new();
        encode(&Frame::Cancel(300), &mut buf).unwrap();
        // "WO" 1, length 3, variant 2, varint 300 (0xac 0x02).
        assert_eq!(buf, [b'W', b'O', 1, 0, 0, 0, 3, 2, 0xac, 0x02]);
    }

    #[test]
    fn the_documented_bytes_of_a_call_and_its_reply() {
        let mut buf = Vec::new();
        let mut call = call(1);
        if let Frame::Call(c) = &mut call {
            c.timeout_ms = 0;
        }
        encode(&call, &mut buf).unwrap();
        let mut want = vec![b'W', b'O', 1, 0, 0, 0, 0x21, 0, 1, 11];
        want.extend_from_slice(b"HelloServer");
        want.push(5);
        want.extend_from_slice(b"Hello");
        want.extend_from_slice(&[1, 8]);
        want.extend_from_slice(b"sayHello");
        want.extend_from_slice(&[0, 0, 0]);
        assert_eq!(buf, want);

        let result = postcard::to_stdvec("Hello World!").unwrap();
        buf.clear();
        encode(&Frame::Reply(Reply { id: 1, outcome: Outcome::Ok(result) }), &mut buf).unwrap();
        let mut want = vec![b'W', b'O', 1, 0, 0, 0, 0x11, 1, 1, 0, 13, 12];
        want.extend_from_slice(b"Hello World!");
        assert_eq!(buf, want);
    }

    #[test]
    fn a_huge_length_is_refused_before_its_bytes_arrive() {
        let e = decode(&[b'W', b'O', 1, 0x7f, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(e.code, Code::Protocol);
        assert_eq!(decode(b"GET / HTTP/1.1\r\n").unwrap_err().code, Code::Protocol);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut framed = Vec::new();
            let start = FRAMING.begin(&mut framed);
            framed.extend_from_slice(&bytes);
            FRAMING.finish(&mut framed, start).unwrap();
            let _ = decode(&framed);
        }
    }
}
