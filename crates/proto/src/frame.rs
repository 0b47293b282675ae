//! Length-prefixed frames: the one codec under every binary protocol of warren (the registry's
//! wire, the file service's wire, the hub process's link).
//!
//! ```text
//! offset  size  field
//! 0       P     the protocol's fixed prefix (magic and version bytes; may be empty)
//! P       4     length N of the body, big-endian (N ≤ the framing's maximum)
//! P+4     N     body, which the protocol decodes
//! ```
//!
//! A length over the maximum is refused as soon as the length field arrives, before any of its
//! bytes are buffered, so a peer cannot make a receiver hold more than one maximum frame.

/// How a protocol frames its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// Bytes every frame starts with; a frame that starts otherwise is an error.
    pub prefix: &'static [u8],
    /// The longest body accepted.
    pub max: usize,
}

/// Why the front of a buffer is not a frame. The stream cannot be resynchronised after it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Prefix byte `at` was `got`.
    #[error("byte {at} of the frame is {got:#04x}, not the protocol's")]
    BadPrefix { at: usize, got: u8 },
    /// The length field says more than the maximum.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

impl Framing {
    /// Bytes before the body.
    pub const fn header(&self) -> usize {
        self.prefix.len() + 4
    }

    /// The frame at the front of `buf`: its body and its whole length (header included), or
    /// `None` while it is incomplete.
    pub fn split<'a>(&self, buf: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, FrameError> {
        let Some(len) = self.declared_len(buf)? else { return Ok(None) };
        Ok(buf.get(self.header()..self.header() + len).map(|body| (body, self.header() + len)))
    }

    /// The body length the frame at the front of `buf` declares, or `None` until its header has
    /// arrived: for a protocol that refuses some lengths under the maximum (too short for what
    /// every body starts with) as early as the maximum refuses longer ones.
    pub fn declared_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        for (at, (&got, &want)) in buf.iter().zip(self.prefix).enumerate() {
            if got != want {
                return Err(FrameError::BadPrefix { at, got });
            }
        }
        let Some(field) = buf.get(self.prefix.len()..self.header()) else { return Ok(None) };
        let len = u32::from_be_bytes(field.try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        Ok(Some(len))
    }

    /// Start a frame at the end of `out`: the prefix and a length to fill in. Append the body,
    /// then call [`Framing::finish`] with the returned start.
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(&[0; 4]);
        start
    }

    /// Fill in the length of the frame begun at `start`. A body over the maximum is taken off
    /// again (nothing of the frame stays in `out`) and refused.
    pub fn finish(&self, out: &mut Vec<u8>, start: usize) -> Result<(), FrameError> {
        let len = out.len() - start - self.header();
        if len > self.max {
            out.truncate(start);
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let at = start + self.prefix.len();
        out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Append a whole frame with `body`.
    pub fn encode(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = self.begin(out);
        out.extend_from_slice(body);
        self.finish(out, start)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const F: Framing = Framing { prefix: &[0xD7, 1], max: 16 };

    #[test]
    fn round_trip_and_incomplete() {
        let mut buf = Vec::new();
        F.encode(b"hello", &mut buf).unwrap();
        assert_eq!(buf, [0xD7, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        for cut in 0..buf.len() {
            assert_eq!(F.split(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(F.split(&buf), Ok(Some((&b"hello"[..], 11))));
    }

    #[test]
    fn the_length_is_known_once_the_header_is() {
        let mut buf = Vec::new();
        F.encode(b"hello", &mut buf).unwrap();
        for cut in 0..F.header() {
            assert_eq!(F.declared_len(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(F.declared_len(&buf[..F.header()]), Ok(Some(5)));
        assert_eq!(F.declared_len(&[0xD7, 2]), Err(FrameError::BadPrefix { at: 1, got: 2 }));
    }

    #[test]
    fn refusals() {
        assert_eq!(F.split(&[0xD8]), Err(FrameError::BadPrefix { at: 0, got: 0xD8 }));
        assert_eq!(F.split(&[0xD7, 2, 0]), Err(FrameError::BadPrefix { at: 1, got: 2 }));
        // Refused on the length alone, before the body arrives.
        assert_eq!(F.split(&[0xD7, 1, 0, 0, 0, 17]), Err(FrameError::TooLarge { len: 17, max: 16 }));
        let mut out = b"kept".to_vec();
        assert_eq!(F.encode(&[0; 17], &mut out), Err(FrameError::TooLarge { len: 17, max: 16 }));
        assert_eq!(out, b"kept");
    }

    proptest! {
        #[test]
        fn frames_follow_each_other(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=16), 0..8)) {
            let mut buf = Vec::new();
            for body in &bodies {
                F.encode(body, &mut buf).unwrap();
            }
            let mut at = 0;
            for body in &bodies {
                let (got, len) = F.split(&buf[at..]).unwrap().unwrap();
                prop_assert_eq!(got, &body[..]);
                at += len;
            }
            prop_assert_eq!(at, buf.len());
        }
    }
}
