//! `files_wire`: the file service's frame decoder (`warren_fileserver::wire`).
//!
//! Input: any bytes, decoded frame after frame as requests and, separately, as replies, whole
//! and fed in chunks of the sizes the first byte picks.
//!
//! Checks: no panic; `Ok(None)` only for an incomplete frame (a prefix shorter than its length
//! says); `TooLarge` only for a length over `MAX_FRAME`; a decoded frame takes `5..=MAX_FRAME + 4`
//! bytes and encodes back to exactly those bytes (the format is canonical); decoding a prefix
//! of a frame never yields a different frame.

use warren_fileserver::wire::{MAX_FRAME, Reply, Request, WireError};

trait Frame: Sized + PartialEq + std::fmt::Debug {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError>;
    fn encode(&self, out: &mut Vec<u8>);
}

impl Frame for Request {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        Request::decode(buf)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Request::encode(self, out)
    }
}

impl Frame for Reply {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        Reply::decode(buf)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Reply::encode(self, out)
    }
}

fn check<F: Frame>(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        match F::decode(rest) {
            Ok(Some((frame, used))) => {
                assert!((5..=MAX_FRAME + 4).contains(&used) && used <= rest.len());
                let mut again = Vec::new();
                frame.encode(&mut again);
                assert_eq!(again, &rest[..used], "{frame:?} does not encode back to its bytes");
                for cut in [4, used / 2, used - 1] {
                    assert!(matches!(F::decode(&rest[..cut]), Ok(None)), "a prefix of {frame:?} decoded");
                }
                at += used;
            }
            Ok(None) => {
                let len = rest.get(..4).map(|h| u32::from_be_bytes(h.try_into().unwrap()) as usize);
                assert!(len.is_none_or(|len| rest.len() < 4 + len), "a complete frame reported incomplete");
                return;
            }
            Err(WireError::TooLarge(len)) => {
                assert!(len > MAX_FRAME);
                return;
            }
            Err(_) => return,
        }
    }
}

pub fn run(data: &[u8]) {
    check::<Request>(data);
    check::<Reply>(data);
}
