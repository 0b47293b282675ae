//! The document root's wall: from a request target to a relative path that can only name
//! something under the root.
//!
//! [`resolve_target`] is a pure function; the file-opening layer joins its [`SafePath`] to the
//! root. The wall holds by construction, not by pattern-matching attacks:
//!
//! - **Decoding happens exactly once**, on the whole path, before any check. Every check then
//!   looks at the bytes the file system will see. Decoding twice would let `%252e%252e` (whose
//!   first decoding is the harmless file name `%2e%2e`) become `..` after the checks; decoding
//!   after splitting would let `%2f` smuggle a `/` into a component. So `%252e` stays the
//!   literal three bytes `%2e`, and a `%2f` is a separator like any `/`.
//! - **The result is built only from normal components.** The decoded path is split at `/`;
//!   empty and `.` components are dropped (collapsing `//` and `/./`); `..` (and any name made
//!   only of dots) is refused, never resolved, so no combination climbs; a component holding a
//!   backslash, a NUL or a control character is refused. What remains has no separator, no
//!   parent reference and no root, so `root.join(path)` stays under `root`, lexically.
//! - **Invalid UTF-8 after decoding is refused**, which also disposes of overlong encodings
//!   (`%c0%ae` is not a `.` in UTF-8, only in broken decoders).
//!
//! What this module cannot see is the file system: a **symlink** under the root may point
//! outside it. Refusing (or allowing, when configured) such links is the job of the layer that
//! opens files (`warren-docroot`, through `openat2` with `RESOLVE_BENEATH`). Policy on dot
//! files (`.git`, `.env`) is that layer's too.
//!
//! The file server has a wall of its own, which accepts different paths
//! (`warren_fileserver::path` says how and why).

use std::path::PathBuf;

/// A request path reduced to normal components, safe to join to the document root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafePath {
    /// Non-empty names holding no `/`, `\`, NUL or control character, none `.` or `..`.
    pub components: Vec<String>,
    /// The target ended in `/` (or `/.`): a directory was asked for (`index.html`, a listing,
    /// or a redirect when the target names a directory without it).
    pub trailing_slash: bool,
}

impl SafePath {
    /// The path relative to the root: empty for the root itself.
    pub fn to_relative_path(&self) -> PathBuf {
        self.components.iter().collect()
    }
}

/// Why a target names no file; each maps to the status the answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not a path: `*`, an authority (`host:80`), a relative reference, an empty target.
    #[error("not an origin-form target")]
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadEscape,
    /// The decoded path is not UTF-8 (overlong encodings included).
    #[error("path is not UTF-8")]
    NotUtf8,
    /// A `..` (or dots-only) component, a backslash, a NUL or a control character.
    #[error("forbidden path")]
    Forbidden,
}

impl PathError {
    /// The status code of the answer: `403` for a refused path, `400` for a malformed one.
    pub fn status(&self) -> u16 {
        match self {
            Self::Forbidden => 403,
            Self::NotOriginForm | Self::BadEscape | Self::NotUtf8 => 400,
        }
    }
}

/// Turns a request target into a [`SafePath`]: see the module documentation for the rules.
///
/// Origin-form (`/a/b?q`) is the normal case; absolute-form (`http://host/a/b`) is reduced to its
/// path, as RFC 9112 §3.2.2 asks of servers. Query and fragment are dropped.
pub fn resolve_target(target: &str) -> Result<SafePath, PathError> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let path = origin_path(&target[..end])?;
    let decoded = percent_decode(path.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let mut components = Vec::new();
    let mut trailing_slash = false;
    // `decoded` starts with `/` (or is empty after `http://host`): the first piece is empty.
    for piece in decoded.split('/') {
        trailing_slash = piece.is_empty() || piece == ".";
        if trailing_slash {
            continue;
        }
        if piece.bytes().all(|b| b == b'.') || piece.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(PathError::Forbidden);
        }
        components.push(piece.to_owned());
    }
    Ok(SafePath { components, trailing_slash })
}

/// The path of an origin-form or absolute-form target (before the query), still encoded.
fn origin_path(target: &str) -> Result<&str, PathError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    let scheme_end = target.find("://").ok_or(PathError::NotOriginForm)?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(PathError::NotOriginForm);
    }
    let after = &target[scheme_end + 3..];
    match after.find('/') {
        Some(slash) if slash > 0 => Ok(&after[slash..]),
        None if !after.is_empty() => Ok("/"),
        _ => Err(PathError::NotOriginForm), // `http:///x`: no authority
    }
}

/// Decodes `%XX` escapes once; any other `%` is an error.
fn percent_decode(bytes: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| hex(b));
            let lo = bytes.get(i + 2).and_then(|&b| hex(b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
