//! HTTP/1.x for the static file server (issue 3).
//!
//! What exists:
//!
//! - [`request`]: [`parse_head`] reads one request head from the front of a buffer, within
//!   [`RequestLimits`], and hands back how many bytes it took so pipelined requests stay
//!   queued; HTTP/0.9 simple requests (`GET /path`, the course's LargerHttpd) are recognised;
//!   every refusal is a [`HeadError`] carrying its status (400, 414, 431, 505).
//! - [`path`]: [`resolve_target`], the document root's lexical wall: a request target becomes a
//!   [`SafePath`] of normal components only, or a [`PathError`] (400 or 403).
//! - [`files`]: the [`Files`] trait through which the session opens what a [`SafePath`] names
//!   (a file, or a directory with its index or listing). The session stays sans-IO; the
//!   OS-backed document root, which refuses symlinks out of the root, is `warren-docroot`.
//! - [`session`]: [`Http`], the [`Service`](crate::Service) named `http`, and [`HttpSession`]:
//!   keep-alive, pipelining, GET and HEAD, the idle and read (`408`) timeouts, directory
//!   redirects, index and listing, every error status with a small body, HTTP/0.9 raw answers
//!   and bare errors, file bodies queued with `Output::send_file` for `sendfile`, and the access
//!   log in the Common Log Format.
//! - [`response`] (status lines, dates, media types, escaping), [`range`] (one `bytes` range;
//!   several are served whole), [`conditional`] (`ETag`, `If-None-Match`, `If-Modified-Since`,
//!   `If-Range`).
//!
//! - [`metrics`]: the server's counters, answered as a Prometheus page at `/metrics`.
//! - [`visits`]: the `/visits` demo, a visit counter kept in a signed cookie (stateless) and in
//!   the hub's session table (soft state); which survives a restart is in its docs.
//!
//! What is to come: the benchmark against nginx.
//!
//! Everything here is sans-IO like the rest of the crate: bytes and strings in, values out.

pub mod conditional;
pub mod files;
pub mod metrics;
pub mod path;
pub mod range;
mod reply;
pub mod request;
pub mod response;
pub mod session;
pub mod visits;

pub use files::{Dir, DirEntry, Entry, Files, FilesError, OpenFile};
pub use metrics::HttpMetrics;
pub use path::{PathError, SafePath, resolve_target};
pub use request::{Head, HeadError, Method, RequestLimits, Version, parse_head};
pub use session::{DEFAULT_METRICS_PATH, Http, HttpLimits, HttpSession, REFUSAL};
pub use visits::{VisitsConfig, VisitsHub, VisitsMessage, VisitsRequest};

#[cfg(test)]
mod path_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod visits_tests;
