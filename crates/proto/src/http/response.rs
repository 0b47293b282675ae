//! The pieces of an answer: status lines and header blocks, error bodies, HTTP dates, media
//! types and HTML escaping. Pure functions; the session decides which to use.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// The reason phrase of every status this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// The course's LargerHttpd errors for HTTP/0.9 requests: bare strings, no status line.
pub fn simple_error(status: u16) -> &'static [u8] {
    match status {
        404 => b"404 Object Not Found",
        403 => b"403 Forbidden",
        400 => b"400 Bad Request",
        _ => b"500 Internal Server Error",
    }
}

/// A small HTML body for an error status.
pub fn error_body(status: u16) -> String {
    let title = format!("{status} {}", reason(status));
    format!("<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n")
}

/// A response head being written: the status line, then `Date` and `Server`, then fields.
///
/// Written straight into bytes, without the formatting machinery: this runs once per request.
#[derive(Debug)]
pub struct ResponseHead {
    buf: Vec<u8>,
}

impl ResponseHead {
    /// Starts an `HTTP/1.1` head (a server answers with its own version, RFC 9110 §6.2).
    pub fn new(status: u16, date: SystemTime) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut buf, u64::from(status));
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\nDate: ");
        push_http_date(&mut buf, date);
        buf.extend_from_slice(b"\r\nServer: warren\r\n");
        Self { buf }
    }

    /// Adds one field. Values come from this crate or were checked: no CR or LF.
    pub fn field(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        struct Bytes<'a>(&'a mut Vec<u8>);
        impl std::fmt::Write for Bytes<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.extend_from_slice(s.as_bytes());
                Ok(())
            }
        }
        self.field_with(name, |buf| {
            let _ = write!(Bytes(buf), "{value}");
        })
    }

    /// Adds one field whose value is text.
    pub fn field_str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field_with(name, |buf| buf.extend_from_slice(value.as_bytes()))
    }

    /// Adds one field whose value is a number.
    pub fn field_number(&mut self, name: &str, value: u64) -> &mut Self {
        self.field_with(name, |buf| push_decimal(buf, value))
    }

    /// Adds one field whose value is an HTTP date.
    pub fn field_date(&mut self, name: &str, value: SystemTime) -> &mut Self {
        self.field_with(name, |buf| push_http_date(buf, value))
    }

    /// Adds one field whose value `write` appends (no CR or LF).
    pub fn field_with(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        write(&mut self.buf);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the head with the empty line.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends `n` in lowercase hexadecimal.
pub(crate) fn push_hex(buf: &mut Vec<u8>, n: u128) {
    let mut digits = [0u8; 32];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// The media type for a file name, from its extension (any case); text types say UTF-8.
pub fn content_type(name: &str) -> &'static str {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    const TYPES: [(&str, &str); 15] = [
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("svg", "image/svg+xml"),
        ("ico", "image/x-icon"),
        ("pdf", "application/pdf"),
        ("wasm", "application/wasm"),
    ];
    TYPES.iter().find(|(e, _)| e.eq_ignore_ascii_case(ext)).map_or("application/octet-stream", |(_, t)| t)
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a file name for a link: everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Whole seconds since the epoch (times before it count as the epoch: no file is that old).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day count since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The IMF-fixdate of `t` (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let mut buf = Vec::with_capacity(29);
    push_http_date(&mut buf, t);
    String::from_utf8(buf).expect("ASCII")
}

/// Appends the IMF-fixdate of `t` (29 bytes up to the year 9999).
pub(crate) fn push_http_date(buf: &mut Vec<u8>, t: SystemTime) {
    let secs = unix_secs(t);
    let days = (secs / 86_400) as i64;
    let (y, mo, d) = civil_from_days(days);
    let s = secs % 86_400;
    let two = |buf: &mut Vec<u8>, n: u64| buf.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
    buf.extend_from_slice(DAYS[(days % 7) as usize].as_bytes());
    buf.extend_from_slice(b", ");
    two(buf, u64::from(d));
    buf.push(b' ');
    buf.extend_from_slice(MONTHS[mo as usize - 1].as_bytes());
    buf.push(b' ');
    let y = y.max(0) as u64;
    if y < 1000 {
        buf.extend(std::iter::repeat_n(
            b'0',
            if y < 10 {
                3
            } else if y < 100 {
                2
            } else {
                1
            },
        ));
    }
    push_decimal(buf, y);
    buf.push(b' ');
    two(buf, s / 3600);
    buf.push(b':');
    two(buf, s / 60 % 60);
    buf.push(b':');
    two(buf, s % 60);
    buf.extend_from_slice(b" GMT");
}

/// The Common Log Format date: `10/Oct/2000:13:55:36 +0000`.
pub fn clf_date(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000", MONTHS[mo as usize - 1], s / 3600, s / 60 % 60, s % 60)
}

/// Parses an IMF-fixdate. The obsolete RFC 850 and asctime forms, which recipients "MUST"
/// accept, are not: a date we cannot read only costs a `200` instead of a `304`.
pub fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(value).ok()?.trim();
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = s.get(5..)?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let month = MONTHS.iter().position(|&m| m == month)? as u32 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(clf_date(t), "06/Nov/1994:08:49:37 +0000");
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(http_date(SystemTime::UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(parse_http_date(http_date(leap).as_bytes()), Some(leap));
        for bad in ["", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 1:2:3 GMT"]
        {
            assert_eq!(parse_http_date(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn types_and_escapes() {
        assert_eq!(content_type("a.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.tar.gz"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("p.png"), "image/png");
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(content_type("a.Json"), "application/json");
        assert_eq!(content_type(".htaccess"), "application/octet-stream");
    }

    #[test]
    fn heads_are_written_byte_by_byte() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut h = ResponseHead::new(206, t);
        h.field_str("Content-Type", "text/plain")
            .field_number("Content-Length", 0)
            .field_number("X-Big", u64::MAX)
            .field_date("Last-Modified", SystemTime::UNIX_EPOCH)
            .field("Content-Range", format_args!("bytes {}-{}/{}", 1, 2, 3))
            .field_with("ETag", |b| push_hex(b, 0xabc0));
        assert_eq!(
            String::from_utf8(h.finish()).unwrap(),
            "HTTP/1.1 206 Partial Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: warren\r\n\
             Content-Type: text/plain\r\nContent-Length: 0\r\nX-Big: 18446744073709551615\r\n\
             Last-Modified: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Range: bytes 1-2/3\r\nETag: abc0\r\n\r\n"
        );
        let mut hex = Vec::new();
        push_hex(&mut hex, 0);
        push_hex(&mut hex, u128::MAX);
        assert_eq!(hex, format!("0{:x}", u128::MAX).as_bytes());
    }

    #[test]
    fn dates_match_the_formatter_far_and_wide() {
        // Every 1000003 s over several centuries: the byte writer agrees with `format!`.
        let mut secs = 0u64;
        while secs < 400 * 365 * 86_400 {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let days = (secs / 86_400) as i64;
            let (y, mo, d) = civil_from_days(days);
            let s = secs % 86_400;
            let expected = format!(
                "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
                DAYS[(days % 7) as usize],
                MONTHS[mo as usize - 1],
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            assert_eq!(http_date(t), expected);
            assert_eq!(parse_http_date(expected.as_bytes()), Some(t));
            secs += 1_000_003;
        }
    }
}
