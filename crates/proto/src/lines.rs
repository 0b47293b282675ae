//! Splitting a byte stream into bounded lines, for the line-based protocols (pingpong, chat).

/// Why a line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// More than the limit arrived without a newline.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
}

/// Accumulates input and yields complete lines without their `\n` or `\r\n`.
///
/// Invariant: never holds more than `max` bytes without a newline among them.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already searched for a newline.
    scanned: usize,
    max: usize,
}

impl LineReader {
    /// A reader accepting lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), scanned: 0, max }
    }

    /// Append input.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, if any. After an error the reader is unusable: close the
    /// connection.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                if end > self.max + 1 || (end == self.max + 1 && self.buf[end - 1] != b'\r') {
                    return Err(LineError::TooLong(self.max));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max + 1 { Err(LineError::TooLong(self.max)) } else { Ok(None) }
            }
        }
    }

    /// Whether part of a line is waiting for its end.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_lines_in_any_chunking() {
        let mut r = LineReader::new(8);
        r.push(b"ab\r\ncd");
        assert_eq!(r.next_line().unwrap(), Some(b"ab".to_vec()));
        assert_eq!(r.next_line().unwrap(), None);
        assert!(r.is_partial());
        r.push(b"e\n\n");
        assert_eq!(r.next_line().unwrap(), Some(b"cde".to_vec()));
        assert_eq!(r.next_line().unwrap(), Some(b"".to_vec()));
        assert!(!r.is_partial());
    }

    #[test]
    fn refuses_long_lines() {
        let mut r = LineReader::new(4);
        r.push(b"1234\r\n12345\n");
        assert_eq!(r.next_line().unwrap(), Some(b"1234".to_vec()));
        assert_eq!(r.next_line(), Err(LineError::TooLong(4)));
        let mut r = LineReader::new(4);
        r.push(b"123456");
        assert_eq!(r.next_line(), Err(LineError::TooLong(4)));
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_lines(lines in proptest::collection::vec("[a-z ]{0,6}", 0..8), cut in 0usize..64) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let cut = cut.min(bytes.len());
            let mut r = LineReader::new(6);
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                r.push(part);
                while let Some(l) = r.next_line().unwrap() {
                    got.push(String::from_utf8(l).unwrap());
                }
            }
            prop_assert_eq!(got, lines);
        }
    }
}
