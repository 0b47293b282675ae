//! `registry_wire`: the registry's frame decoder (`warren_registry::wire`) on arbitrary bytes.
//!
//! Input: any bytes, read as a stream of frames twice: as requests (what a server reads) and as
//! answers (what a client reads).
//!
//! Checks:
//! - no panic, whatever the header, length or body;
//! - `Incomplete` only while the frame is not all there; a frame's `len` is its header plus its
//!   declared length, so the next frame starts right after it;
//! - refusals only for what they say: a wrong magic or version byte, a length over the limit or
//!   under the 4 bytes of the request id;
//! - a body that decodes encodes again into a frame that decodes to the same id and value (bytes
//!   may differ: postcard accepts overlong varints);
//! - a body that does not decode fails that frame only, and the stream goes on after it.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use warren_registry::wire::{Decoded, FrameError, HEADER, MAGIC, Request, Response, VERSION, decode, encode};

/// A small limit, so that inputs reach it.
const MAX: usize = 1024;

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    stream::<Request>(data);
    stream::<Response>(data);
}

fn stream<T: Serialize + DeserializeOwned + Debug + PartialEq>(data: &[u8]) {
    let mut rest = data;
    loop {
        let declared = rest.get(2..HEADER).map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize);
        match decode::<T>(rest, MAX) {
            Ok(Decoded::Incomplete) => {
                assert!(declared.is_none_or(|len| rest.len() < HEADER + len), "a whole frame left undecoded");
                return;
            }
            Ok(Decoded::Frame { len, id, body }) => {
                assert_eq!(Some(len), declared.map(|d| HEADER + d), "a frame's length is not its header's");
                assert!((rest[0], rest[1]) == (MAGIC, VERSION));
                assert_eq!(id, u32::from_be_bytes(rest[HEADER..HEADER + 4].try_into().unwrap()));
                if let Ok(value) = body {
                    let mut again = Vec::new();
                    encode(id, &value, MAX, &mut again).expect("a decoded body re-encodes within the limit");
                    match decode::<T>(&again, MAX) {
                        Ok(Decoded::Frame { len, id: back_id, body: Ok(back) }) => {
                            assert_eq!((len, back_id), (again.len(), id));
                            assert_eq!(back, value, "a decoded frame does not round trip");
                        }
                        other => panic!("a re-encoded frame does not decode: {other:?}"),
                    }
                }
                rest = &rest[len..];
            }
            Err(FrameError::BadMagic(m)) => return assert_ne!(m, MAGIC),
            Err(FrameError::BadVersion(v)) => return assert_ne!(v, VERSION),
            Err(FrameError::TooLarge(n)) => return assert!(n > MAX && declared == Some(n)),
            Err(FrameError::TooShort(n)) => return assert!(n < 4 && declared == Some(n)),
        }
    }
}
