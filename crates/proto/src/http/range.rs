//! `Range: bytes=…` (RFC 9110 §14.2): one range is served as `206`; several ranges are served
//! as the whole file with `200`, which §14.2 allows ("a server MAY ignore the Range header"),
//! and which saves a `multipart/byteranges` writer that curl and browsers hardly ever need.

/// What to send for a file of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole file, `200` (no range, a malformed one, another unit, or several ranges).
    Full,
    /// Bytes `start..=end`, `206` with `Content-Range: bytes start-end/len`.
    Partial { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets a `Range` field value against a representation of `len` bytes.
pub fn parse_range(value: &[u8], len: u64) -> RangeAnswer {
    let Some(spec) = std::str::from_utf8(value).ok().and_then(|s| strip_unit(s.trim())) else {
        return RangeAnswer::Full;
    };
    let mut ranges = spec.split(',').map(str::trim).filter(|r| !r.is_empty());
    let (Some(one), None) = (ranges.next(), ranges.next()) else {
        return RangeAnswer::Full; // none, or several: the whole file
    };
    let Some((first, last)) = one.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-n`: the last n bytes.
        return match digits(last) {
            None => RangeAnswer::Full, // `-` alone, or junk: malformed, so ignored
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Partial { start: len.saturating_sub(n), end: len - 1 },
        };
    }
    let Some(start) = digits(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            _ => return RangeAnswer::Full, // `5-3` or junk: invalid, so ignored
        }
    };
    if start >= len { RangeAnswer::Unsatisfiable } else { RangeAnswer::Partial { start, end: end.min(len - 1) } }
}

/// The part after `bytes=` (unit case-insensitive), if the unit is bytes.
fn strip_unit(s: &str) -> Option<&str> {
    let (unit, rest) = s.split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(rest)
}

/// A non-empty decimal number (overflowing numbers are refused, hence ignored).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::*;
    use super::*;

    #[test]
    fn every_form() {
        let cases: &[(&str, u64, RangeAnswer)] = &[
            ("bytes=0-9", 100, Partial { start: 0, end: 9 }),
            ("bytes=10-", 100, Partial { start: 10, end: 99 }),
            ("bytes=-10", 100, Partial { start: 90, end: 99 }),
            ("bytes=-1000", 100, Partial { start: 0, end: 99 }),
            ("bytes=90-1000", 100, Partial { start: 90, end: 99 }),
            ("Bytes = 5-5", 100, Partial { start: 5, end: 5 }),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=0-1,5-6", 100, Full),
            ("bytes=5-3", 100, Full),
            ("bytes=-", 100, Full),
            ("bytes=a-b", 100, Full),
            ("bytes=-x", 100, Full),
            ("items=0-1", 100, Full),
            ("bytes=", 100, Full),
            ("bytes=99999999999999999999999-", 100, Full),
        ];
        for (value, len, want) in cases {
            assert_eq!(parse_range(value.as_bytes(), *len), *want, "{value:?} of {len}");
        }
    }
}
