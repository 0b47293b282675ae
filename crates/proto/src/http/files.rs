//! What the HTTP session needs from the file system, as a trait: the session stays sans-IO and
//! its tests run on an in-memory tree, while `warren-docroot` implements it over a real document
//! root (the symlink wall lives there, because only the file system can see symlinks).

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use super::path::SafePath;

/// Opens what a [`SafePath`] names beneath the document root.
///
/// [`Files::open`] may wait for the disk (a directory read, an inode not in memory): the
/// session calls it in a job, which the loop-based models run on a helper thread.
/// [`Files::try_open`] is the fast way for what the kernel has cached, answered on the spot.
pub trait Files: Send + Sync + 'static {
    /// The file or directory `path` names, relative to the root.
    fn open(&self, path: &SafePath) -> Result<Entry, FilesError>;

    /// The same without waiting for the disk: `None` if it would have to (then the session
    /// calls [`Files::open`] in a job). The default opens at once, for trees that never wait
    /// (in memory).
    fn try_open(&self, path: &SafePath) -> Option<Result<Entry, FilesError>> {
        Some(self.open(path))
    }
}

/// What a path names.
#[derive(Debug)]
pub enum Entry {
    /// A regular file, opened.
    File(OpenFile),
    /// A directory.
    Dir(Dir),
}

/// A regular file, open for reading, with what its validators are made of.
#[derive(Clone, Debug)]
pub struct OpenFile {
    /// The open file, handed to the driver for `sendfile`. It may serve several requests at
    /// once (a document root keeps files open), so it is only ever read at an offset.
    pub file: Arc<File>,
    /// Its length when it was opened (what `Content-Length` promises).
    pub len: u64,
    /// Its modification time (`Last-Modified`, `If-Modified-Since`).
    pub modified: SystemTime,
    /// Anything that tells two files apart (device and inode): part of the `ETag`, so that a
    /// file replaced by another of the same length and mtime still gets a new tag.
    pub id: u64,
}

/// A directory, with what the configuration lets the session do with it.
#[derive(Debug, Default)]
pub struct Dir {
    /// The index file (`index.html`) and its name, when the directory has one.
    pub index: Option<(String, OpenFile)>,
    /// The directory's entries, sorted by name, when listings are enabled and there is no
    /// index. Neither index nor listing: the session answers `403`, like nginx.
    pub listing: Option<Vec<DirEntry>>,
}

/// One line of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
    pub modified: SystemTime,
}

/// Why a path could not be opened; each maps to the status the answer carries.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Nothing there (or a file used as a directory): `404`.
    #[error("not found")]
    NotFound,
    /// There, but not to be served: a symlink out of the root, no permission, not a regular
    /// file or directory: `403`.
    #[error("forbidden")]
    Forbidden,
    /// Anything else the file system said: `500`.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FilesError {
    /// The status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Forbidden => 403,
            Self::Io(_) => 500,
        }
    }
}
