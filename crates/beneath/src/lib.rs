//! Opening beneath a directory: the one place where warren resolves a path that a peer chose.
//!
//! A [`Root`] holds a descriptor of a directory. Every path opened through it is resolved by the
//! kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: no `..`, no symlink (absolute
//! or relative, there before the open or swapped in during it) and no `/proc` magic link leads
//! out; such an open fails with `EXDEV` (or `ELOOP`), which callers answer as forbidden. Links
//! that stay inside are followed.
//!
//! A [`Dir`] is a directory opened beneath a root, the same way, and what a store writes
//! through: it makes directories (durably), creates, renames and removes files, and is
//! `fsync`ed. Those calls take one name in that directory and act on that entry itself, so they
//! resolve nothing that could lead out; only [`Dir::open_dir`] resolves a path, beneath the
//! `Dir`.
//!
//! Kernels older than 5.6 have no `openat2`: opens fail with `ENOSYS` and each caller decides
//! (the document root takes its checked path, the file server refuses).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::{FileStat, Mode, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

/// A directory whose descendants can be opened, and nothing outside it.
#[derive(Debug)]
pub struct Root {
    /// Canonical, for callers that also check paths by name.
    path: PathBuf,
    /// `O_PATH`: searching the root needs no permission to read it.
    fd: OwnedFd,
}

impl Root {
    /// The root at `path`, which must be an existing directory.
    pub fn new(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = fs::canonicalize(path)?;
        if !fs::metadata(&path)?.is_dir() {
            return Err(io::Error::new(ErrorKind::NotADirectory, format!("{} is not a directory", path.display())));
        }
        let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Self { path, fd })
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open `path` beneath the root (empty or `.`: the root itself) with `flags`; close-on-exec
    /// is added, and so is `O_NOCTTY` to any open but an `O_PATH` one.
    pub fn open(&self, path: impl AsRef<Path>, flags: OFlag) -> nix::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), path.as_ref(), flags, Mode::empty())
    }

    /// Open directory `path` beneath the root (empty or `.`: the root itself), readable.
    pub fn open_dir(&self, path: impl AsRef<Path>) -> nix::Result<Dir> {
        self.open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map(Dir)
    }
}

/// A readable directory opened beneath a [`Root`]: what is written through it stays beneath it.
#[derive(Debug)]
pub struct Dir(OwnedFd);

impl Dir {
    /// Open directory `path` beneath this one: resolving it may not leave this directory.
    pub fn open_dir(&self, path: impl AsRef<Path>) -> nix::Result<Dir> {
        open_beneath(self.0.as_fd(), path.as_ref(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).map(Dir)
    }

    /// Open directory `name` here, refused (`ENOTDIR`, as for any entry that is no directory)
    /// if `name` is a symlink: for a directory that a link inside the root must not stand in for.
    pub fn open_dir_nofollow(&self, name: impl AsRef<Path>) -> nix::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        open_beneath(self.0.as_fd(), name.as_ref(), flags, Mode::empty()).map(Dir)
    }

    /// Make directory `name` here with permission bits `mode` (less the umask), unless it
    /// exists. A new one's entry is durable when this returns: this directory is `fsync`ed. What
    /// goes into the new directory is durable once that one is `fsync`ed in turn.
    pub fn make_dir(&self, name: impl AsRef<Path>, mode: u32) -> nix::Result<()> {
        match mkdirat(&self.0, name.as_ref(), Mode::from_bits_truncate(mode)) {
            Ok(()) => self.sync(),
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Create file `name` here, for writing, with permission bits `mode` (less the umask);
    /// `EEXIST` if anything has that name.
    pub fn create_new(&self, name: impl AsRef<Path>, mode: u32) -> nix::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        open_beneath(self.0.as_fd(), name.as_ref(), flags, Mode::from_bits_truncate(mode)).map(File::from)
    }

    /// The status of what `name` here is or, for a symlink, points to, wherever that is: a
    /// listing shows the size of a link's target even when opening it would be refused.
    pub fn stat(&self, name: impl AsRef<Path>) -> nix::Result<FileStat> {
        fstatat(&self.0, name.as_ref(), AtFlags::empty())
    }

    /// The status of entry `name` itself (a symlink is not followed).
    pub fn lstat(&self, name: impl AsRef<Path>) -> nix::Result<FileStat> {
        fstatat(&self.0, name.as_ref(), AtFlags::AT_SYMLINK_NOFOLLOW)
    }

    /// The names of this directory's entries, `.` and `..` left out, in no particular order.
    pub fn names(&self) -> nix::Result<Vec<OsString>> {
        let mut dir = nix::dir::Dir::openat(&self.0, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Rename entry `from` here to `to` in `to_dir`, atomically replacing a file of that name.
    /// Durable once both directories are `fsync`ed.
    pub fn rename(&self, from: impl AsRef<Path>, to_dir: &Dir, to: impl AsRef<Path>) -> nix::Result<()> {
        renameat(&self.0, from.as_ref(), &to_dir.0, to.as_ref())
    }

    /// Remove entry `name` here; `EISDIR` for a directory. Durable once this directory is
    /// `fsync`ed.
    pub fn unlink(&self, name: impl AsRef<Path>) -> nix::Result<()> {
        unlinkat(&self.0, name.as_ref(), UnlinkatFlags::NoRemoveDir)
    }

    /// `fsync` this directory: the entries made, renamed or removed in it so far survive a
    /// crash.
    pub fn sync(&self) -> nix::Result<()> {
        fsync(&self.0)
    }
}

/// The one `openat2` call: `path` (empty: `.`) opened with `flags` and close-on-exec, `mode`
/// for a file it creates, resolved only beneath `dir`.
fn open_beneath(dir: BorrowedFd<'_>, path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    // openat2 refuses O_PATH with any flag but a few; O_NOCTTY only matters for real opens.
    let extra = if flags.contains(OFlag::O_PATH) { OFlag::O_CLOEXEC } else { OFlag::O_CLOEXEC | OFlag::O_NOCTTY };
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    let how = OpenHow::new()
        .flags(flags | extra)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(dir, path, how)
}

#[cfg(test)]
mod tests;
