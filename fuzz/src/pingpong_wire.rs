//! `pingpong_wire`: `Line::parse` on arbitrary bytes, and the line format's round trip.
//!
//! Input: any bytes. The whole input, and each of its `\n`-separated pieces, is parsed as one
//! line; the same bytes also build one arbitrary [`Line`] value (with an `ERROR` reason of
//! printable ASCII, the only kind a line can carry).
//!
//! Checks:
//! - no panic;
//! - a parsed line, printed with `to_bytes` (which ends it with `\n`) and parsed again, is the
//!   same line; the printed form is no longer than the input (plus its newline) and is
//!   printable ASCII;
//! - any line value prints as a single line that parses back to it.

use arbitrary::{Arbitrary, Unstructured};
use warren_proto::pingpong::Line;

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    check_parse(data);
    for piece in data.split(|&b| b == b'\n') {
        check_parse(piece);
    }
    let mut u = Unstructured::new(data);
    if let Ok(line) = arbitrary_line(&mut u) {
        let bytes = line.to_bytes();
        let (last, body) = bytes.split_last().expect("to_bytes is never empty");
        assert_eq!(*last, b'\n', "{line:?} does not end with a newline");
        assert_eq!(Line::parse(body).as_ref(), Some(&line), "{line:?} printed as {:?}", String::from_utf8_lossy(body));
    }
}

fn check_parse(input: &[u8]) {
    let Some(line) = Line::parse(input) else {
        return;
    };
    let bytes = line.to_bytes();
    let (last, body) = bytes.split_last().expect("to_bytes is never empty");
    assert_eq!(*last, b'\n');
    assert!(body.len() <= input.len(), "{line:?} printed longer than it was read");
    assert!(body.iter().all(|b| (0x20..0x7f).contains(b)), "{line:?} printed as non-printable bytes");
    assert_eq!(Line::parse(body).as_ref(), Some(&line), "{line:?} does not survive printing and parsing");
}

fn arbitrary_line(u: &mut Unstructured<'_>) -> arbitrary::Result<Line> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Line::Hello(u32::arbitrary(u)?),
        1 => Line::Welcome { version: u32::arbitrary(u)?, game: u64::arbitrary(u)? },
        2 => Line::Toss(u64::arbitrary(u)?),
        3 => Line::Ball,
        4 => Line::Ping(u64::arbitrary(u)?),
        5 => Line::Pong(u64::arbitrary(u)?),
        6 => Line::Bye,
        _ => {
            let len = u.int_in_range(0..=80usize)?;
            let mut reason = String::with_capacity(len);
            for _ in 0..len {
                reason.push(char::from(u.int_in_range(0x20..=0x7eu8)?));
            }
            Line::Error(reason)
        }
    })
}
