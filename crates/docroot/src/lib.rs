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
//!
//! Dot-files are hidden unless [`DocRootOptions::dotfiles`] says otherwise: a request whose path
//! has any component starting with `.` (`/.git/HEAD`, `/a/.env`) is answered as if nothing were
//! there (`404`, as Caddy's `hide`; nginx users write `location ~ /\. { deny all; }` for this), and
//! listings leave such names out. A root that holds a repository or an editor's swap files then
//! does not give them away.
//!
//! Files opened are kept open for the next request of the same path, 256 at most and no more than a
//! sixteenth of the descriptor limit (nginx's `open_file_cache`, but checked every time): a request
//! for a kept path costs one `stat` of the path instead of an `openat2`, an `fstat` and a `close`.
//! The kept file is served only if the path still names that very file (device and inode) and the
//! file's status has not changed since it was opened (its ctime: content, size, mode, links);
//! anything else opens it afresh, through the wall, with the answer that gives (a new file, `403`,
//! `404`). Length and times always come from the fresh `stat`, and the kept descriptor is only ever
//! read at an offset, so every answer sees the file as it is now. The `stat` itself resolves the
//! path without the wall, which is safe: it only decides whether to reuse a file that was opened
//! beneath the root.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{SFlag, fstatat};
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
    /// Serve and list names starting with `.`. Default `false`: they are `404` and unlisted.
    pub dotfiles: bool,
}

impl Default for DocRootOptions {
    fn default() -> Self {
        Self { follow_symlinks_outside: false, index: "index.html".into(), listing: false, dotfiles: false }
    }
}

/// A name hidden when dot-files are: `.git`, `.env`, `.htpasswd`.
fn is_dotfile(name: &str) -> bool {
    name.starts_with('.')
}

/// How many open files a [`DocRoot`] keeps for the paths asked for again, at most; and at most
/// a sixteenth of the descriptor limit, so that connections keep nearly all of it.
const KEPT_FILES: usize = 256;

/// [`KEPT_FILES`] within the process's descriptor limit.
fn kept_files() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    KEPT_FILES.min(usize::try_from(soft / 16).unwrap_or(KEPT_FILES))
}

/// A directory whose contents are served, and nothing outside it.
#[derive(Debug)]
pub struct DocRoot {
    /// Opened beneath, and its canonical path: every prefix check compares canonical paths.
    root: Root,
    /// The root again (`O_PATH`), for the `stat` that checks a kept file.
    dir: OwnedFd,
    options: DocRootOptions,
    kept: Mutex<HashMap<PathBuf, Kept>>,
    /// How many files `kept` may hold.
    most_kept: usize,
}

/// A file opened for a path, and what tells whether the path still names it unchanged.
#[derive(Debug)]
struct Kept {
    file: Arc<File>,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl DocRoot {
    /// A document root at `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>, options: DocRootOptions) -> io::Result<Self> {
        let root = Root::new(root)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(root.path(), flags, nix::sys::stat::Mode::empty())?;
        Ok(Self { root, dir, options, kept: Mutex::new(HashMap::new()), most_kept: kept_files() })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file kept for `relative`, if the path still names it and it has not changed; a kept
    /// file that fails the check is forgotten.
    fn reuse(&self, relative: &Path) -> Option<OpenFile> {
        let (file, dev, ino, ctime) = {
            let kept = self.kept();
            let k = kept.get(relative)?;
            (k.file.clone(), k.dev, k.ino, k.ctime)
        };
        let now = fstatat(self.dir.as_fd(), relative, AtFlags::empty()).ok();
        match now {
            Some(st)
                if st.st_dev == dev
                    && st.st_ino == ino
                    && (st.st_ctime, st.st_ctime_nsec) == ctime
                    && SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG =>
            {
                let modified = system_time(st.st_mtime, st.st_mtime_nsec);
                Some(OpenFile { file, len: st.st_size as u64, modified, id: st.st_ino ^ st.st_dev.rotate_left(32) })
            }
            _ => {
                self.kept().remove(relative);
                None
            }
        }
    }

    /// Keep `file`, just opened for `relative`, for the next request of it.
    fn keep(&self, relative: &Path, file: &Arc<File>, meta: &Metadata) {
        let kept =
            Kept { file: file.clone(), dev: meta.dev(), ino: meta.ino(), ctime: (meta.ctime(), meta.ctime_nsec()) };
        let mut map = self.kept();
        if self.most_kept == 0 {
            return;
        }
        if map.len() >= self.most_kept && !map.contains_key(relative) {
            // Full: make room by dropping any one (the map's order is as good as random).
            if let Some(any) = map.keys().next().cloned() {
                map.remove(&any);
            }
        }
        map.insert(relative.to_owned(), kept);
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
            if !self.options.dotfiles && is_dotfile(&name) {
                continue;
            }
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
        if let Some(file) = self.reuse(relative) {
            return Some(Ok(Entry::File(file)));
        }
        let file = match self.open_beneath(relative)? {
            Ok(file) => file,
            Err(e) => return Some(Err(e)),
        };
        Some((|| {
            let meta = file.metadata().map_err(classify)?;
            if meta.is_file() {
                let file = Arc::new(file);
                self.keep(relative, &file, &meta);
                Ok(Entry::File(OpenFile {
                    len: meta.len(),
                    modified: meta.modified()?,
                    id: meta.ino() ^ meta.dev().rotate_left(32),
                    file,
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
        if !self.options.dotfiles && path.components.iter().any(|c| is_dotfile(c)) {
            return Err(FilesError::NotFound);
        }
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

/// A time from `stat`'s seconds and nanoseconds (either side of the epoch).
fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(secs.unsigned_abs(), 0);
    let t = if secs >= 0 { UNIX_EPOCH + since } else { UNIX_EPOCH - since };
    t + Duration::from_nanos(nanos.clamp(0, 999_999_999) as u64)
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
