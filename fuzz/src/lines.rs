//! `lines`: arbitrary bytes, in arbitrary chunks, into a [`LineReader`].
//!
//! Input: `[max] [chunking] stream...`. The first byte is the line limit (0 to 255 bytes), the
//! second picks the chunking (bits 0-2, see [`Chunker`]) and seeds the chunk sizes.
//!
//! Checks, whatever the input and its chunking:
//! - no panic;
//! - no line longer than the limit, none holding a `\n`;
//! - the lines are exactly those of a one-line reference model: split at `\n`, drop one `\r`
//!   before it, stop at the first line over the limit;
//! - the error is reported iff the model has a line over the limit (a complete one, or an
//!   unfinished one already over `limit + 1` bytes, which no `\r\n` can save), and its limit is
//!   the reader's;
//! - `is_partial` says whether an unfinished line is left.

use warren_proto::lines::{LineError, LineReader};

use crate::{Chunker, Rng};

/// What a correct reader yields for `stream` with limit `max`.
struct Expected {
    lines: Vec<Vec<u8>>,
    too_long: bool,
    partial: bool,
}

fn reference(stream: &[u8], max: usize) -> Expected {
    let mut lines = Vec::new();
    let mut segments: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let partial = segments.pop().unwrap_or_default();
    for raw in segments {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > max {
            return Expected { lines, too_long: true, partial: true };
        }
        lines.push(line.to_vec());
    }
    Expected { lines, too_long: partial.len() > max + 1, partial: !partial.is_empty() }
}

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let [max, chunking, stream @ ..] = data else {
        return;
    };
    let max = usize::from(*max);
    let expected = reference(stream, max);
    let mut rng = Rng::new(u64::from(*chunking));
    let mut reader = LineReader::new(max);
    let mut got = Vec::new();
    let mut failed = false;
    'feed: for chunk in Chunker::new(*chunking).split(&mut rng, stream) {
        reader.push(chunk);
        loop {
            match reader.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= max, "a line of {} bytes passed a limit of {max}", line.len());
                    assert!(!line.contains(&b'\n'), "a line holds a newline: {line:?}");
                    got.push(line);
                }
                Ok(None) => break,
                Err(LineError::TooLong(limit)) => {
                    assert_eq!(limit, max, "the error names another limit");
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expected.lines, "lines differ from the reference split");
    assert_eq!(failed, expected.too_long, "too-long error reported {failed}, expected {}", expected.too_long);
    if !failed {
        assert_eq!(reader.is_partial(), expected.partial, "is_partial disagrees with the unfinished line");
    }
}
