//! Splitting a byte stream into bounded lines, for the line-based protocols (pingpong, chat).
//!
//! The work is linear in the input: each byte is searched for a newline once, a line is
//! copied out once, and consumed bytes are dropped from the front of the buffer only when they
//! are at least as many as the bytes kept, so the bytes moved by compaction never exceed the
//! bytes consumed. (Draining the front once per line made a read full of newlines quadratic:
//! one 16 KiB read of `\n` moved 134 MB.)

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
    /// Bytes at the front of `buf` already handed out as lines.
    start: usize,
    /// Bytes at the front of `buf` already searched for a newline (`start <= scanned`).
    scanned: usize,
    max: usize,
    /// Bytes searched and bytes moved so far, for the tests that hold the work linear.
    #[cfg(test)]
    work: Work,
}

#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    scanned: usize,
    moved: usize,
}

impl LineReader {
    /// A reader accepting lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
            #[cfg(test)]
            work: Work::default(),
        }
    }

    /// Append input.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Drop the consumed front once it is at least as long as what is kept, so that each
    /// move is paid for by as many bytes consumed.
    fn compact(&mut self) {
        let kept = self.buf.len() - self.start;
        if self.start == 0 || self.start < kept {
            return;
        }
        #[cfg(test)]
        {
            self.work.moved += kept;
        }
        self.buf.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
    }

    /// The next complete line, if any. After an error the reader is unusable: close the
    /// connection.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        #[cfg(test)]
        {
            self.work.scanned += found.map_or(self.buf.len() - self.scanned, |i| i + 1);
        }
        match found {
            Some(i) => {
                let end = self.scanned + i;
                let len = end - self.start;
                if len > self.max + 1 || (len == self.max + 1 && self.buf[end - 1] != b'\r') {
                    return Err(LineError::TooLong(self.max));
                }
                let mut line = &self.buf[self.start..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let line = line.to_vec();
                self.start = end + 1;
                self.scanned = self.start;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max + 1 { Err(LineError::TooLong(self.max)) } else { Ok(None) }
            }
        }
    }

    /// Whether part of a line is waiting for its end.
    pub fn is_partial(&self) -> bool {
        self.buf.len() > self.start
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

    /// Feeds `input` in reads of `read` bytes, taking every complete line after each read.
    fn feed(r: &mut LineReader, input: &[u8], read: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for chunk in input.chunks(read) {
            r.push(chunk);
            while let Some(line) = r.next_line().unwrap() {
                lines.push(line);
            }
        }
        lines
    }

    #[test]
    fn a_flood_of_newlines_costs_linear_work() {
        // 4 MiB of empty lines in 16 KiB reads, as a chat client can send them.
        let input = vec![b'\n'; 4 << 20];
        let mut r = LineReader::new(4096);
        let lines = feed(&mut r, &input, 16 * 1024);
        assert_eq!(lines.len(), input.len());
        assert!(r.work.scanned <= input.len(), "scanned {} for {} bytes", r.work.scanned, input.len());
        assert!(r.work.moved <= input.len(), "moved {} for {} bytes", r.work.moved, input.len());
    }

    #[test]
    fn a_reader_that_lags_still_moves_no_more_than_it_consumed() {
        // The caller takes one line per read: lines pile up, and each compaction must be paid
        // for by bytes consumed before it.
        let mut r = LineReader::new(64);
        let mut consumed = 0;
        for _ in 0..10_000 {
            r.push(b"0123456789\n0123456789\n");
            consumed += r.next_line().unwrap().unwrap().len() + 1;
        }
        assert!(r.work.moved <= consumed, "moved {} for {consumed} consumed", r.work.moved);
        assert!(r.work.scanned <= 2 * consumed);
    }

    #[test]
    fn lines_split_across_reads() {
        // A line cut inside, at its CR, between CR and LF, and at the LF.
        let input = b"first line\r\nsecond\n\nthird\r\n";
        let want: Vec<Vec<u8>> = vec![b"first line".to_vec(), b"second".to_vec(), b"".to_vec(), b"third".to_vec()];
        for read in 1..=input.len() {
            let mut r = LineReader::new(16);
            assert_eq!(feed(&mut r, input, read), want, "reads of {read} bytes");
            assert!(!r.is_partial());
        }
    }

    #[test]
    fn the_limit_holds_after_compaction() {
        // A full line right after consumed ones is still measured from its own start.
        let mut r = LineReader::new(4);
        assert_eq!(feed(&mut r, b"a\nb\ncd\n", 3), vec![b"a".to_vec(), b"b".to_vec(), b"cd".to_vec()]);
        r.push(b"1234");
        assert_eq!(r.next_line().unwrap(), None);
        r.push(b"\r\n");
        assert_eq!(r.next_line().unwrap(), Some(b"1234".to_vec()));
        r.push(b"123");
        assert_eq!(r.next_line().unwrap(), None);
        r.push(b"45\n");
        assert_eq!(r.next_line(), Err(LineError::TooLong(4)));
    }

    proptest! {
        #[test]
        fn work_is_linear_in_any_chunking(
            lines in proptest::collection::vec("[a-z]{0,12}", 0..64),
            read in 1usize..40,
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let mut r = LineReader::new(12);
            let got = feed(&mut r, text.as_bytes(), read);
            prop_assert_eq!(got.len(), lines.len());
            prop_assert!(r.work.scanned <= text.len());
            prop_assert!(r.work.moved <= text.len());
        }


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
