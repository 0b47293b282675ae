//! Writing one answer into the output: a file (whole, a range, `304`, `416`), an error or
//! redirect with its small body, a directory listing; HTTP/0.9 variants included. The session
//! decides which; these functions only frame and queue.

use std::time::SystemTime;

use super::conditional::{if_range_holds, not_modified, push_etag};
use super::files::{DirEntry, OpenFile};
use super::path::SafePath;
use super::range::{RangeAnswer, parse_range};
use super::request::{Head, Method, Version};
use super::response::{ResponseHead, content_type, error_body, html_escape, percent_encode, simple_error};
use crate::Output;

/// What answering one request did, for the access log and the connection.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    /// Body bytes queued (the file slice's length included).
    pub(super) bytes: u64,
}

/// How to frame the answer to one request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Frame {
    pub(super) date: SystemTime,
    pub(super) version: Version,
    pub(super) is_head: bool,
    /// Whether the connection stays open after this answer.
    pub(super) keep: bool,
}

/// Serves a regular file: `200`, `206`, `304` or `416`; HTTP/0.9 gets the raw bytes.
pub(super) fn serve_file<R, D>(head: &Head, name: &str, file: OpenFile, frame: Frame, out: &mut Output<R, D>) -> Reply {
    if frame.version == Version::Http09 {
        out.send_file(file.file, 0, file.len);
        return Reply { status: 200, bytes: file.len };
    }
    if not_modified(head, &file) {
        let mut h = ResponseHead::new(304, frame.date);
        h.field_with("ETag", |b| push_etag(b, &file)).field_date("Last-Modified", file.modified);
        connection(&mut h, frame);
        out.send(&h.finish());
        return Reply { status: 304, bytes: 0 };
    }
    // Range handling is defined for GET only (RFC 9110 §14.2): HEAD gets the whole length.
    let range = match head.header("range") {
        Some(value) if head.method == Method::Get && if_range_holds(head, &file) => parse_range(value, file.len),
        _ => RangeAnswer::Full,
    };
    let (status, start, len) = match range {
        RangeAnswer::Full => (200, 0, file.len),
        RangeAnswer::Partial { start, end } => (206, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            return error(416, frame, &[("Content-Range", format!("bytes */{}", file.len))], out);
        }
    };
    let mut h = ResponseHead::new(status, frame.date);
    h.field_str("Content-Type", content_type(name))
        .field_number("Content-Length", len)
        .field_date("Last-Modified", file.modified)
        .field_with("ETag", |b| push_etag(b, &file))
        .field_str("Accept-Ranges", "bytes");
    if status == 206 {
        h.field("Content-Range", format_args!("bytes {start}-{}/{}", start + len - 1, file.len));
    }
    connection(&mut h, frame);
    out.send(&h.finish());
    if frame.is_head {
        return Reply { status, bytes: 0 };
    }
    out.send_file(file.file, start, len);
    Reply { status, bytes: len }
}

/// An error (or a redirect) with a small HTML body; HTTP/0.9 gets the course's bare string.
pub(super) fn error<R, D>(status: u16, frame: Frame, fields: &[(&str, String)], out: &mut Output<R, D>) -> Reply {
    if frame.version == Version::Http09 {
        let bare = simple_error(status);
        out.send(bare);
        return Reply { status, bytes: bare.len() as u64 };
    }
    send_whole(status, frame, "text/html; charset=utf-8", error_body(status).as_bytes(), fields, out)
}

/// An answer whose body is in memory (errors, listings).
pub(super) fn send_whole<R, D>(
    status: u16,
    frame: Frame,
    mime: &str,
    body: &[u8],
    fields: &[(&str, String)],
    out: &mut Output<R, D>,
) -> Reply {
    if frame.version == Version::Http09 {
        out.send(body);
        return Reply { status, bytes: body.len() as u64 };
    }
    let mut h = ResponseHead::new(status, frame.date);
    h.field_str("Content-Type", mime).field_number("Content-Length", body.len() as u64);
    for (name, value) in fields {
        h.field_str(name, value);
    }
    connection(&mut h, frame);
    out.send(&h.finish());
    if frame.is_head {
        return Reply { status, bytes: 0 };
    }
    out.send(body);
    Reply { status, bytes: body.len() as u64 }
}

/// `Connection: close` when closing; `keep-alive` when an HTTP/1.0 connection stays open.
pub(super) fn connection(h: &mut ResponseHead, frame: Frame) {
    if !frame.keep {
        h.field_str("Connection", "close");
    } else if frame.version == Version::Http10 {
        h.field_str("Connection", "keep-alive");
    }
}

/// The target with a `/` after its path, query kept: where `/dir` redirects.
pub(super) fn with_slash(target: &str) -> String {
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    // The target came through the parser (no CR, LF or controls): safe in a header.
    match query {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    }
}

/// A directory listing page; names are escaped for HTML and percent-encoded in links.
pub(super) fn listing(path: &SafePath, entries: &[DirEntry]) -> String {
    let mut shown = String::from("/");
    for c in &path.components {
        shown.push_str(c);
        shown.push('/');
    }
    let title = format!("Index of {}", html_escape(&shown));
    let mut page = format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n");
    page.push_str(&format!("<body><h1>{title}</h1><ul>\n"));
    if !path.components.is_empty() {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for e in entries {
        let slash = if e.is_dir { "/" } else { "" };
        let size = if e.is_dir { String::new() } else { format!(" {} bytes", e.len) };
        let (href, name) = (percent_encode(&e.name), html_escape(&e.name));
        page.push_str(&format!("<li><a href=\"{href}{slash}\">{name}{slash}</a>{size}</li>\n"));
    }
    page.push_str("</ul></body></html>\n");
    page
}
