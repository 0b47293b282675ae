//! The document root of warren's HTTP server: the OS-backed [`Files`] the sans-IO session opens
//! files through.
//!
//! The request path arrives as a [`SafePath`] (normal components only: no `..`, no root, no
//! separator inside a name), so joining it to the root cannot climb lexically. What remains is
//! the file system's own way out, **symlinks**: the joined path is canonicalized (every link
//! resolved) and must still lie beneath the canonical root, unless
//! [`DocRootOptions::follow_symlinks_outside`] says otherwise. Links inside the root are fine.
//!
//! Files are then opened through a [`Root`] (`openat2(RESOLVE_BENEATH)` relative to a descriptor
//! of the root), so the kernel itself refuses any resolution that leaves the root: a directory
//! swapped for a symlink between the check and the open cannot lead out. (Kernels older than 5.6
//! lack `openat2`; there the open falls back to the checked path and that window stays open.)
//! Directory listings are read through the checked path and may race the same way; they reveal
//! names only.
//!
//! Only regular files and directories are served: a FIFO or a device under the root is
//! `Forbidden` (opening a FIFO would block the server).

use std::fs::{self, File, Metadata};
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use warren_beneath::Root;
use warren_proto::http::{Dir, DirEntry, Entry, Files, FilesError, OpenFile, SafePath};

/// How a [`DocRoot`] treats symlinks and directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocRootOptions {
    /// Serve what a symlink points to even when it is outside the root. Default `false`.
    pub follow_symlinks_outside: bool,
    /// The file a directory is answered with when it has one. Default `index.html`.
    pub index: String,
    /// List a directory without an index. Default `false` (the answer is then `403`).
    pub listing: bool,
}

impl Default for DocRootOptions {
    fn default() -> Self {
        Self { follow_symlinks_outside: false, index: "index.html".into(), listing: false }
    }
}

/// A directory whose contents are served, and nothing outside it.
#[derive(Debug)]
pub struct DocRoot {
    /// Opened beneath, and its canonical path: every prefix check compares canonical paths.
    root: Root,
    options: DocRootOptions,
}

impl DocRoot {
    /// A document root at `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>, options: DocRootOptions) -> io::Result<Self> {
        Ok(Self { root: Root::new(root)?, options })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The canonical path `relative` names, if it may be served.
    fn resolve(&self, relative: &Path) -> Result<PathBuf, FilesError> {
        let real = fs::canonicalize(self.root().join(relative)).map_err(classify)?;
        if !self.options.follow_symlinks_outside && !real.starts_with(self.root()) {
            return Err(FilesError::Forbidden);
        }
        Ok(real)
    }

    /// `relative` opened by the kernel beneath the root, or `None` where `openat2` is missing
    /// (Linux before 5.6).
    fn open_beneath(&self, relative: &Path) -> Option<Result<File, FilesError>> {
        // Non-blocking, so that a FIFO swapped in cannot hold the server; no effect on files.
        match self.root.open(relative, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => Some(Ok(File::from(fd))),
            Err(Errno::ENOSYS) => None,
            // The kernel saw the resolution leave the root.
            Err(Errno::EXDEV | Errno::ELOOP) => Some(Err(FilesError::Forbidden)),
            Err(e) => Some(Err(classify(e.into()))),
        }
    }

    /// Open `relative`, whose checked canonical form is `real`: beneath the root, or by the
    /// checked path where symlinks out are allowed or `openat2` is missing.
    fn open_checked(&self, relative: &Path, real: &Path) -> Result<File, FilesError> {
        let beneath = if self.options.follow_symlinks_outside { None } else { self.open_beneath(relative) };
        beneath.unwrap_or_else(|| File::open(real).map_err(classify))
    }

    fn open_file(&self, relative: &Path, real: &Path, meta: &Metadata) -> Result<OpenFile, FilesError> {
        let file = self.open_checked(relative, real)?;
        // The length and times of what was opened, not of what the path names by now.
        let meta_now = file.metadata().map_err(classify)?;
        if !meta_now.is_file() || meta_now.ino() != meta.ino() {
            return Err(FilesError::Forbidden);
        }
        Ok(OpenFile {
            file: Arc::new(file),
            len: meta_now.len(),
            modified: meta_now.modified()?,
            id: meta_now.ino() ^ meta_now.dev().rotate_left(32),
        })
    }

    fn open_dir(&self, real: &Path) -> Result<Dir, FilesError> {
        // The index goes through the same wall: it may itself be a symlink.
        let index_path = real.strip_prefix(self.root()).unwrap_or(Path::new("")).join(&self.options.index);
        match self.resolve(&index_path) {
            Ok(index_real) => {
                let meta = fs::metadata(&index_real).map_err(classify)?;
                if meta.is_file() {
                    let file = self.open_file(&index_path, &index_real, &meta)?;
                    return Ok(Dir { index: Some((self.options.index.clone(), file)), listing: None });
                }
            }
            Err(FilesError::NotFound | FilesError::Forbidden) => {}
            Err(e) => return Err(e),
        }
        if !self.options.listing {
            return Ok(Dir::default());
        }
        let mut listing = Vec::new();
        for entry in fs::read_dir(real).map_err(classify)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // a name that is not UTF-8 could not be requested anyway
            };
            // Follow links for the listing's sizes; a dangling one is listed as a 0-byte file.
            let meta = fs::metadata(entry.path()).or_else(|_| entry.metadata())?;
            let modified = meta.modified()?;
            listing.push(DirEntry { name, is_dir: meta.is_dir(), len: meta.len(), modified });
        }
        listing.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Dir { index: None, listing: Some(listing) })
    }
}

impl DocRoot {
    /// The common case in one `openat2` and one `fstat`: the kernel confines the resolution to
    /// the root, so no path check is needed first. `None` where `openat2` is missing (Linux
    /// before 5.6) or symlinks out are allowed: the caller takes the checked path.
    fn open_fast(&self, relative: &Path) -> Option<Result<Entry, FilesError>> {
        if self.options.follow_symlinks_outside {
            return None;
        }
        let file = match self.open_beneath(relative)? {
            Ok(file) => file,
            Err(e) => return Some(Err(e)),
        };
        Some((|| {
            let meta = file.metadata().map_err(classify)?;
            if meta.is_file() {
                Ok(Entry::File(OpenFile {
                    len: meta.len(),
                    modified: meta.modified()?,
                    id: meta.ino() ^ meta.dev().rotate_left(32),
                    file: Arc::new(file),
                }))
            } else if meta.is_dir() {
                // Directories are rare: their index and listing take the checked path.
                Ok(Entry::Dir(self.open_dir(&self.resolve(relative)?)?))
            } else {
                Err(FilesError::Forbidden)
            }
        })())
    }
}

impl Files for DocRoot {
    fn open(&self, path: &SafePath) -> Result<Entry, FilesError> {
        let relative = path.to_relative_path();
        if let Some(entry) = self.open_fast(&relative) {
            return entry;
        }
        let real = self.resolve(&relative)?;
        let meta = fs::metadata(&real).map_err(classify)?;
        if meta.is_file() {
            Ok(Entry::File(self.open_file(&relative, &real, &meta)?))
        } else if meta.is_dir() {
            Ok(Entry::Dir(self.open_dir(&real)?))
        } else {
            Err(FilesError::Forbidden)
        }
    }
}

/// Maps the file system's answer onto the statuses a client may see.
fn classify(e: io::Error) -> FilesError {
    match e.kind() {
        // `a.txt/b`: a file used as a directory names nothing.
        ErrorKind::NotFound | ErrorKind::NotADirectory => FilesError::NotFound,
        // ELOOP (a symlink cycle) has no stable kind: Forbidden like any refused link.
        ErrorKind::PermissionDenied => FilesError::Forbidden,
        _ if e.raw_os_error() == Some(40) => FilesError::Forbidden,
        _ => FilesError::Io(e),
    }
}

#[cfg(test)]
mod tests;
