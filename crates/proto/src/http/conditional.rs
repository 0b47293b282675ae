//! Validators and conditional requests (RFC 9110 §8.8, §13): the `ETag` of a file,
//! `If-None-Match` and `If-Modified-Since` (→ `304`), and `If-Range` (serve the range only if
//! the client's copy is still current).

use super::files::OpenFile;
use super::request::Head;
use super::response::{parse_http_date, push_hex, unix_secs};

/// A strong entity tag from the file's identity, modification time (to the nanosecond) and
/// length: any change to the file's content changes at least one of them in practice.
pub fn etag(file: &OpenFile) -> String {
    let mut buf = Vec::with_capacity(48);
    push_etag(&mut buf, file);
    String::from_utf8(buf).expect("ASCII")
}

/// Appends the [`etag`] of `file`.
pub fn push_etag(buf: &mut Vec<u8>, file: &OpenFile) {
    let nanos = file.modified.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    buf.push(b'"');
    push_hex(buf, u128::from(file.id));
    buf.push(b'-');
    push_hex(buf, nanos);
    buf.push(b'-');
    push_hex(buf, u128::from(file.len));
    buf.push(b'"');
}

/// Whether a `304 Not Modified` answers a GET or HEAD for `file` (RFC 9110 §13.2.2 order:
/// `If-None-Match` first; `If-Modified-Since` only when there is none).
pub fn not_modified(head: &Head, file: &OpenFile) -> bool {
    let mut inm = head.headers_named("if-none-match").peekable();
    if inm.peek().is_some() {
        let tag = etag(file);
        return inm.flat_map(|v| v.split(|&b| b == b',')).any(|t| weak_eq(t.trim_ascii(), tag.as_bytes()));
    }
    match head.header("if-modified-since").and_then(parse_http_date) {
        // HTTP dates have whole seconds: compare the file's mtime at that precision.
        Some(since) => unix_secs(file.modified) <= unix_secs(since),
        None => false,
    }
}

/// Whether a `Range` may be honoured given `If-Range` (§13.1.5): with no `If-Range`, yes; with
/// an entity tag, only if it matches strongly; with a date, only if it equals `Last-Modified`.
pub fn if_range_holds(head: &Head, file: &OpenFile) -> bool {
    let Some(value) = head.header("if-range") else {
        return true;
    };
    let value = value.trim_ascii();
    if value.starts_with(b"\"") {
        return value == etag(file).as_bytes();
    }
    if value.starts_with(b"W/") {
        return false; // a weak tag never validates a range
    }
    parse_http_date(value).is_some_and(|date| unix_secs(date) == unix_secs(file.modified))
}

/// Weak comparison: `*` matches any existing file; `W/"x"` equals `"x"`.
fn weak_eq(candidate: &[u8], tag: &[u8]) -> bool {
    candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == tag
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::http::request::{Method, Version};
    use crate::http::response::http_date;

    fn file() -> OpenFile {
        let modified = SystemTime::UNIX_EPOCH + Duration::new(1_000_000, 500);
        OpenFile { file: Arc::new(std::fs::File::open("/dev/null").unwrap()), len: 10, modified, id: 7 }
    }

    fn head(fields: &[(&str, &str)]) -> Head {
        let headers = fields.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
        Head { method: Method::Get, target: "/".into(), version: Version::Http11, headers }
    }

    #[test]
    fn validators() {
        let f = file();
        let tag = etag(&f);
        assert_eq!(tag, "\"7-38d7ea4c681f4-a\"");
        let date = http_date(f.modified);
        let later = http_date(f.modified + Duration::from_secs(5));
        let earlier = http_date(f.modified - Duration::from_secs(5));
        assert!(not_modified(&head(&[("if-none-match", &tag)]), &f));
        assert!(not_modified(&head(&[("if-none-match", &format!("\"x\", W/{tag}"))]), &f));
        assert!(not_modified(&head(&[("if-none-match", "*")]), &f));
        assert!(!not_modified(&head(&[("if-none-match", "\"x\"")]), &f));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(&head(&[("if-none-match", "\"x\""), ("if-modified-since", &later)]), &f));
        assert!(not_modified(&head(&[("if-modified-since", &date)]), &f));
        assert!(not_modified(&head(&[("if-modified-since", &later)]), &f));
        assert!(!not_modified(&head(&[("if-modified-since", &earlier)]), &f));
        assert!(!not_modified(&head(&[("if-modified-since", "yesterday")]), &f));
        assert!(!not_modified(&head(&[]), &f));

        assert!(if_range_holds(&head(&[]), &f));
        assert!(if_range_holds(&head(&[("if-range", &tag)]), &f));
        assert!(!if_range_holds(&head(&[("if-range", &format!("W/{tag}"))]), &f));
        assert!(!if_range_holds(&head(&[("if-range", "\"other\"")]), &f));
        assert!(if_range_holds(&head(&[("if-range", &date)]), &f));
        assert!(!if_range_holds(&head(&[("if-range", &earlier)]), &f));
    }
}
