//! Finding the end of a chunked body (RFC 9112 §7.1) while it passes through unchanged.
//!
//! The proxy forwards a chunked body byte for byte (it never re-frames), so all it needs is to
//! know which bytes belong to the body and where it ends: [`Chunked::scan`] walks the framing
//! (sizes, extensions, data, trailer fields) and keeps no byte. Chunk data it has not seen yet
//! is known in length ([`Chunked::data_left`]), so the caller may move that much in the kernel
//! without looking at it and then [`Chunked::skip`] it.

/// A chunked body is malformed: a size that is not hex or too large, a missing CRLF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` seen so far.
    Size {
        digits: u8,
    },
    /// A chunk extension (or whitespace before one), up to its CR.
    Ext,
    /// The LF after a size line.
    SizeLf,
    /// Chunk data, this many bytes still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// The start of a trailer line: CR here is the end of the body.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Where a chunked body stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    size: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

/// More hex digits than this in a chunk size overflow 64 bits.
const MAX_SIZE_DIGITS: u8 = 15;

impl Chunked {
    /// At the start of a body.
    pub const fn new() -> Self {
        Self { state: State::Size { digits: 0 }, size: 0 }
    }

    /// Whether the body ended (its last chunk and trailer have been seen).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of chunk data that follow now, which may be passed on without being scanned.
    pub fn data_left(&self) -> u64 {
        match self.state {
            State::Data(n) => n,
            _ => 0,
        }
    }

    /// `n` bytes of chunk data (at most [`Chunked::data_left`]) went by unscanned.
    pub fn skip(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            let left = left - n.min(left);
            self.state = if left == 0 { State::DataCr } else { State::Data(left) };
        }
    }

    /// Scans the front of `input`: returns how many of its bytes belong to the body (all of
    /// them unless the body ends inside it).
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - at) as u64);
                at += take as usize;
                self.skip(take);
                continue;
            }
            let b = input[at];
            at += 1;
            self.state = match (self.state, b) {
                (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(ChunkError);
                    }
                    self.size = self.size << 4 | u64::from(hex(b));
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits: 1.. }, b';' | b' ' | b'\t') => State::Ext,
                (State::Size { digits: 1.. } | State::Ext, b'\r') => State::SizeLf,
                (State::Ext, b'\n') => return Err(ChunkError),
                (State::Ext, _) => State::Ext,
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data(std::mem::take(&mut self.size)),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => return Err(ChunkError),
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::FinalLf, b'\n') => State::Done,
                _ => return Err(ChunkError),
            };
        }
        Ok(at)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n1A;name=x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: t\r\n\r\n";

    #[test]
    fn finds_the_end_whole_or_byte_by_byte() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut whole = Chunked::new();
        assert_eq!(whole.scan(&input), Ok(BODY.len()));
        assert!(whole.is_done());
        let mut bytewise = Chunked::new();
        let taken: usize = input.iter().map(|b| bytewise.scan(std::slice::from_ref(b)).unwrap()).sum();
        assert_eq!(taken, BODY.len());
        assert!(bytewise.is_done());
    }

    #[test]
    fn unseen_data_may_be_skipped() {
        let mut c = Chunked::new();
        assert_eq!(c.scan(b"10\r\nabc"), Ok(7));
        assert_eq!(c.data_left(), 13);
        c.skip(13);
        assert_eq!(c.scan(b"\r\n0\r\n\r\n"), Ok(7));
        assert!(c.is_done());
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"5\nhello", b"1234567890123456\r\n", b"0\r\nbad\n"] {
            assert_eq!(Chunked::new().scan(bad), Err(ChunkError), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
