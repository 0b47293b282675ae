//! HTTP/1.x for the static file server (issue 3): the pure layers so far.
//!
//! What exists:
//!
//! - [`request`]: [`parse_head`] reads one request head from the front of a buffer, within
//!   [`RequestLimits`], and hands back how many bytes it took so pipelined requests stay
//!   queued; HTTP/0.9 simple requests (`GET /path`, the course's LargerHttpd) are recognised;
//!   every refusal is a [`HeadError`] carrying its status (400, 414, 431, 505).
//! - [`path`]: [`resolve_target`], the document root's wall: a request target becomes a
//!   [`SafePath`] of normal components only, or a [`PathError`] (400 or 403).
//!
//! What is to come, on top of these: the connection session (a `Session` driving keep-alive,
//! pipelining and the idle and read deadlines of `crate::deadline`), opening files beneath the
//! root without following symlinks out of it, answers (status lines, Date, Content-Type,
//! ETag, Last-Modified, ranges, conditional requests, directory index and listing), file
//! bodies handed to the driver for `sendfile`, the access log, and the CLI.
//!
//! Everything here is sans-IO like the rest of the crate: bytes and strings in, values out.

pub mod path;
pub mod request;

pub use path::{PathError, SafePath, resolve_target};
pub use request::{Head, HeadError, Method, RequestLimits, Version, parse_head};

#[cfg(test)]
mod path_tests;
#[cfg(test)]
mod request_tests;
