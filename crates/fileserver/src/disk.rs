//! The OS-backed [`Store`]: a root directory, opened beneath with `openat2(RESOLVE_BENEATH)` so
//! that no symlink leads out, and written durably.
//!
//! **An upload is complete or absent**, also after kill -9 or a power cut: it is written to a
//! partial file in `<root>/.warren/tmp/` (which no request can name), `fsync`ed, renamed over
//! its target with `renameat` (atomic), and the target's directory is `fsync`ed so the rename
//! itself survives. Partial files left by a crash are removed when the store opens.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use crate::path::{FilePath, STATE_DIR};
use crate::store::{Body, BodyData, Discarder, Sink, Store, StoreError};
use crate::wire::{Entry, Meta};

/// A directory whose files are served and written, and nothing outside it.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    root_fd: OwnedFd,
    /// `<root>/.warren/tmp`, where partial uploads live.
    tmp_fd: Arc<OwnedFd>,
    next: AtomicU64,
}

impl DiskStore {
    /// The store at `root`, an existing directory. Creates `.warren/tmp` and removes the partial
    /// files an earlier run left there.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        let root_fd = nix::fcntl::open(&root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        let state = ensure_dir(&root_fd, STATE_DIR)?;
        let tmp_fd = ensure_dir(&state, "tmp")?;
        let mut removed = false;
        for entry in nix::dir::Dir::openat(&tmp_fd, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name.ends_with(b".part") {
                unlinkat(&tmp_fd, entry.file_name(), UnlinkatFlags::NoRemoveDir)?;
                removed = true;
            }
        }
        if removed {
            fsync(&tmp_fd)?;
        }
        Ok(Self { root, root_fd, tmp_fd: Arc::new(tmp_fd), next: AtomicU64::new(0) })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `path`'s state lives: the lease journal's default place.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    fn open_beneath(&self, dir: &impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd, StoreError> {
        // openat2 refuses O_PATH with any flag but a few; O_NOCTTY only matters for real opens.
        let extra = if flags.contains(OFlag::O_PATH) { OFlag::empty() } else { OFlag::O_NOCTTY };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | extra)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(dir, path, how).map_err(classify)
    }

    /// The directory holding `path`, made (with its parents) when `make`.
    fn parent(&self, path: &FilePath, make: bool) -> Result<OwnedFd, StoreError> {
        let names = path.names();
        let mut dir = self.open_beneath(&self.root_fd, Path::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        for name in &names[..names.len().saturating_sub(1)] {
            if make {
                match mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(classify(e)),
                }
            }
            dir = self.open_beneath(&dir, Path::new(name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        }
        Ok(dir)
    }
}

/// Open (making it if missing) directory `name` under `dir`.
fn ensure_dir(dir: &impl AsFd, name: &str) -> io::Result<OwnedFd> {
    match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => fsync(dir)?,
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())?)
}

/// A version that changes whenever the file does: device, inode, modification time and size
/// (a rename puts a new inode in place), hashed; never 0.
fn meta_of(st: &nix::sys::stat::FileStat) -> Meta {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in [st.st_dev, st.st_ino, st.st_mtime as u64, st.st_mtime_nsec as u64, st.st_size as u64] {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    let modified_ms = (st.st_mtime.max(0) as u64) * 1000 + st.st_mtime_nsec as u64 / 1_000_000;
    Meta { is_dir, size: if is_dir { 0 } else { st.st_size as u64 }, version: h.max(1), modified_ms }
}

fn kind(st: &nix::sys::stat::FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

impl Store for DiskStore {
    fn stat(&self, path: &FilePath) -> Result<Meta, StoreError> {
        let fd = self.open_beneath(&self.root_fd, &path.to_relative(), OFlag::O_PATH)?;
        let st = fstat(&fd).map_err(classify)?;
        match kind(&st) {
            SFlag::S_IFREG | SFlag::S_IFDIR => Ok(meta_of(&st)),
            _ => Err(StoreError::Forbidden),
        }
    }

    fn list(&self, path: &FilePath) -> Result<Vec<Entry>, StoreError> {
        let fd = self.open_beneath(&self.root_fd, &path.to_relative(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(classify)?;
        let dir_fd = dir.as_fd().as_raw_fd();
        let mut entries = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(classify)?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if name == "." || name == ".." || (path.is_root() && name == STATE_DIR) {
                continue;
            }
            // SAFETY: the descriptor belongs to `dir`, which outlives this borrow.
            let dir_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(dir_fd) };
            let Ok(st) = fstatat(dir_fd, name, AtFlags::empty()) else { continue };
            let meta = meta_of(&st);
            if matches!(kind(&st), SFlag::S_IFREG | SFlag::S_IFDIR) {
                entries.push(Entry { name: name.to_owned(), is_dir: meta.is_dir, size: meta.size });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn open(&self, path: &FilePath) -> Result<Body, StoreError> {
        // Non-blocking: a FIFO swapped in cannot hold the server; no effect on files.
        let fd = self.open_beneath(&self.root_fd, &path.to_relative(), OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
        let st = fstat(&fd).map_err(classify)?;
        match kind(&st) {
            SFlag::S_IFREG => Ok(Body { meta: meta_of(&st), data: BodyData::File(Arc::new(File::from(fd))) }),
            SFlag::S_IFDIR => Err(StoreError::WrongKind),
            _ => Err(StoreError::Forbidden),
        }
    }

    fn create(&self, path: &FilePath, id: u64) -> Result<Box<dyn Sink>, StoreError> {
        let Some(name) = path.file_name() else { return Err(StoreError::WrongKind) };
        let parent = self.parent(path, true)?;
        if fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| kind(&st) == SFlag::S_IFDIR) {
            return Err(StoreError::WrongKind);
        }
        let tmp_name = format!("{id:016x}-{}.part", self.next.fetch_add(1, Ordering::Relaxed));
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        let fd = openat(&*self.tmp_fd, tmp_name.as_str(), flags, Mode::from_bits_truncate(0o644)).map_err(classify)?;
        Ok(Box::new(DiskSink {
            file: Some(File::from(fd)),
            tmp: self.tmp_fd.clone(),
            tmp_name,
            parent,
            name: name.to_owned(),
        }))
    }

    fn delete(&self, path: &FilePath) -> Result<(), StoreError> {
        let Some(name) = path.file_name() else { return Err(StoreError::WrongKind) };
        let parent = self.parent(path, false)?;
        match unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(fsync(&parent).map_err(classify)?),
            Err(Errno::EISDIR) => Err(StoreError::WrongKind),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A partial upload in `.warren/tmp`, renamed into place on commit.
struct DiskSink {
    /// `None` once committed or aborted.
    file: Option<File>,
    tmp: Arc<OwnedFd>,
    tmp_name: String,
    parent: OwnedFd,
    name: String,
}

impl DiskSink {
    fn file(&mut self) -> Result<&mut File, StoreError> {
        self.file.as_mut().ok_or_else(|| StoreError::Io(io::Error::other("upload already finished")))
    }

    fn remove(&mut self) {
        if let Some(file) = self.file.take() {
            // The name goes first, with the file still open: that takes microseconds. Freeing
            // its pages and blocks happens when the last descriptor closes, and takes about a
            // millisecond per 10 MiB written (more on a busy disk): the reaper does it, so that
            // a cancel is answered without waiting for it.
            let _ = unlinkat(&*self.tmp, self.tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
            reap(file);
        }
    }
}

/// Close `file` on the reaper thread (started on first use in this process), or here if that
/// thread cannot be had.
fn reap(file: File) {
    type Reaper = Option<(u32, std::sync::mpsc::Sender<File>)>;
    static REAPER: std::sync::Mutex<Reaper> = std::sync::Mutex::new(None);
    let mut reaper = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    // A forked child inherits the sender but not the thread: it starts its own.
    let pid = std::process::id();
    if reaper.as_ref().is_none_or(|(owner, _)| *owner != pid) {
        let (tx, rx) = std::sync::mpsc::channel::<File>();
        let spawned =
            std::thread::Builder::new().name("warren-reaper".into()).spawn(move || rx.into_iter().for_each(drop));
        *reaper = spawned.ok().map(|_| (pid, tx));
    }
    match reaper.as_ref() {
        Some((_, tx)) => {
            if let Err(std::sync::mpsc::SendError(file)) = tx.send(file) {
                drop(file);
            }
        }
        None => drop(file),
    }
}

impl Sink for DiskSink {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        Ok(self.file()?.write_all(data)?)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.file()?.sync_data()?)
    }

    fn commit(mut self: Box<Self>) -> Result<Meta, StoreError> {
        let file = self.file.take().ok_or_else(|| StoreError::Io(io::Error::other("upload already finished")))?;
        file.sync_all()?;
        let renamed = renameat(&*self.tmp, self.tmp_name.as_str(), &self.parent, self.name.as_str());
        if let Err(e) = renamed {
            let _ = unlinkat(&*self.tmp, self.tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(match e {
                Errno::EISDIR | Errno::ENOTEMPTY => StoreError::WrongKind,
                e => classify(e),
            });
        }
        // The rename is durable once the directory holding the new name is.
        fsync(&self.parent).map_err(classify)?;
        Ok(meta_of(&fstat(&file).map_err(classify)?))
    }

    fn abort(mut self: Box<Self>) {
        self.remove();
    }

    fn discarder(&self) -> Option<Discarder> {
        // The name is unique to this upload (id and a counter), so a late call never removes
        // another upload's file.
        let (tmp, name) = (self.tmp.clone(), self.tmp_name.clone());
        Some(Arc::new(move || {
            let _ = unlinkat(&*tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
        }))
    }
}

impl Drop for DiskSink {
    fn drop(&mut self) {
        self.remove();
    }
}

fn classify(e: Errno) -> StoreError {
    match e {
        Errno::ENOENT => StoreError::NotFound,
        Errno::ENOTDIR | Errno::EISDIR => StoreError::WrongKind,
        // The kernel saw the resolution leave the root (or a symlink loop).
        Errno::EXDEV | Errno::ELOOP | Errno::EACCES | Errno::EPERM => StoreError::Forbidden,
        e => StoreError::Io(e.into()),
    }
}

#[cfg(test)]
mod tests;
