//! The lexical wall: a path from the wire becomes a [`FilePath`] of plain names, or is refused.
//!
//! Separators are `/` (a leading one is allowed and means the root); a name is refused if it is
//! empty in the middle (`a//b`), `.` or `..`, holds NUL, `\` or a control character, or is
//! longer than 255 bytes. The first name may not be [`STATE_DIR`], where the server keeps its
//! journal and partial uploads: no request can read, list, overwrite or delete them. Symlinks
//! are the file system's business: the disk store opens beneath the root with
//! `openat2(RESOLVE_BENEATH)` (`warren_beneath::Root`), so none leads out.
//!
//! This is not the HTTP document root's wall (`warren_proto::http::path`), because the two
//! accept different paths: that one decodes percent-escapes, keeps a trailing slash, collapses
//! empty and `.` names and refuses every dots-only name; this one decodes nothing, refuses empty
//! and `.` names, allows `...`, bounds each name and reserves [`STATE_DIR`]. One function for
//! both would change what one of them accepts; what they do share (a split at `/`, no `\` or
//! control character in a name) is a line in each.

use std::path::PathBuf;

use crate::wire::MAX_PATH;

/// The server's own directory under the root: the lease journal and partial uploads.
pub const STATE_DIR: &str = ".warren";

/// A path beneath the root: plain names only, possibly none (the root itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(Vec<String>);

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("path has an empty name")]
    Empty,
    #[error("path climbs with . or ..")]
    Dots,
    #[error("path holds NUL, a backslash or a control character")]
    BadChar,
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("path names the server's own state")]
    Reserved,
}

impl FilePath {
    /// Check `raw` from the wire.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let mut names = Vec::new();
        for name in trimmed.split('/') {
            match name {
                "" => return Err(PathError::Empty),
                "." | ".." => return Err(PathError::Dots),
                _ if name.len() > 255 => return Err(PathError::NameTooLong),
                _ if name.chars().any(|c| c == '\\' || c.is_control()) => return Err(PathError::BadChar),
                _ => names.push(name.to_owned()),
            }
        }
        if names[0] == STATE_DIR {
            return Err(PathError::Reserved);
        }
        Ok(Self(names))
    }

    /// The root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, outermost first.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The last name, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// The relative path (`.` for the root), for `*at` calls.
    pub fn to_relative(&self) -> PathBuf {
        if self.0.is_empty() { PathBuf::from(".") } else { self.0.iter().collect() }
    }
}

impl std::fmt::Display for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_the_root_is_empty() {
        assert_eq!(FilePath::parse("/a/b.txt").unwrap().names(), ["a", "b.txt"]);
        assert_eq!(FilePath::parse("a/b.txt").unwrap().to_string(), "/a/b.txt");
        assert!(FilePath::parse("/").unwrap().is_root());
        assert!(FilePath::parse("").unwrap().is_root());
        assert_eq!(FilePath::parse("/.hidden/x..y").unwrap().names(), [".hidden", "x..y"]);
    }

    #[test]
    fn every_way_out_is_refused() {
        for (raw, why) in [
            ("..", PathError::Dots),
            ("/a/../../etc/passwd", PathError::Dots),
            ("a/./b", PathError::Dots),
            ("a//b", PathError::Empty),
            ("a/", PathError::Empty),
            ("//etc", PathError::Empty),
            ("a\\..\\b", PathError::BadChar),
            ("a\0b", PathError::BadChar),
            ("a\nb", PathError::BadChar),
            (".warren/tmp/1.part", PathError::Reserved),
            ("/.warren", PathError::Reserved),
        ] {
            assert_eq!(FilePath::parse(raw), Err(why), "{raw:?}");
        }
        assert_eq!(FilePath::parse(&"a".repeat(256)), Err(PathError::NameTooLong));
        assert_eq!(FilePath::parse(&"a/".repeat(600)), Err(PathError::TooLong));
        // Only the top-level state directory is reserved.
        assert!(FilePath::parse("sub/.warren").is_ok());
    }
}
