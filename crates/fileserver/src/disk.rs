//! The OS-backed [`Store`]: a root directory, opened beneath through a [`Root`]
//! (`openat2(RESOLVE_BENEATH)`) so that no symlink leads out, and written durably.
//!
//! **An upload is complete or absent**, also after kill -9 or a power cut: it is written to a
//! partial file in `<root>/.warren/tmp/` (which no request can name), `fsync`ed, renamed over
//! its target with `renameat` (atomic), and the target's directory is `fsync`ed so the rename
//! itself survives. A directory the upload needed is made before the body arrives, and the
//! directory holding it is `fsync`ed then, so the path to the file survives too. Partial files
//! left by a crash are removed when the store opens.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat};
use warren_beneath::{Dir, Root};

use crate::path::{FilePath, STATE_DIR};
use crate::store::{Body, BodyData, Discarder, Sink, Store, StoreError};
use crate::wire::{Entry, Meta};

/// A directory whose files are served and written, and nothing outside it.
#[derive(Debug)]
pub struct DiskStore {
    root: Root,
    /// `<root>/.warren/tmp`, where partial uploads live.
    tmp: Arc<Dir>,
    next: AtomicU64,
}

impl DiskStore {
    /// The store at `root`, an existing directory. Creates `.warren/tmp` and removes the partial
    /// files an earlier run left there.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = Root::new(root)?;
        let state = ensure_state_dir(&root.open_dir("")?, STATE_DIR)?;
        let tmp = ensure_state_dir(&state, "tmp")?;
        let mut removed = false;
        for name in tmp.names()? {
            if name.as_bytes().ends_with(b".part") {
                tmp.unlink(&name)?;
                removed = true;
            }
        }
        if removed {
            tmp.sync()?;
        }
        Ok(Self { root, tmp: Arc::new(tmp), next: AtomicU64::new(0) })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Where `path`'s state lives: the lease journal's default place.
    pub fn state_dir(&self) -> PathBuf {
        self.root().join(STATE_DIR)
    }

    /// The directory holding `path`, made (with its parents) when `make`. Each directory made is
    /// durable in its parent at once; the last one is `fsync`ed by the commit that renames into
    /// it, every other one by the making of the next.
    fn parent(&self, path: &FilePath, make: bool) -> Result<Dir, StoreError> {
        let names = path.names();
        let mut dir = self.root.open_dir("").map_err(classify)?;
        for name in &names[..names.len().saturating_sub(1)] {
            if make {
                dir.make_dir(name, 0o755).map_err(classify)?;
            }
            dir = dir.open_dir(name).map_err(classify)?;
        }
        Ok(dir)
    }
}

/// Open (making it if missing) the server's own directory `name` in `dir`, never through a
/// symlink: one inside the root would let requests name what is kept there.
fn ensure_state_dir(dir: &Dir, name: &str) -> io::Result<Dir> {
    dir.make_dir(name, 0o700)?;
    Ok(dir.open_dir_nofollow(name)?)
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
        let fd = self.root.open(path.to_relative(), OFlag::O_PATH).map_err(classify)?;
        let st = fstat(&fd).map_err(classify)?;
        match kind(&st) {
            SFlag::S_IFREG | SFlag::S_IFDIR => Ok(meta_of(&st)),
            _ => Err(StoreError::Forbidden),
        }
    }

    fn list(&self, path: &FilePath, after: &str, max: usize) -> Result<(Vec<Entry>, bool), StoreError> {
        let dir = self.root.open_dir(path.to_relative()).map_err(classify)?;
        // Every name is read (a directory has no order to seek in), but only a page is stat'ed.
        let mut names: Vec<String> = Vec::new();
        for name in dir.names().map_err(classify)? {
            let Some(name) = name.to_str() else { continue };
            if (path.is_root() && name == STATE_DIR) || name <= after {
                continue;
            }
            names.push(name.to_owned());
        }
        names.sort_unstable();
        let mut entries = Vec::new();
        let mut names = names.into_iter();
        for name in names.by_ref() {
            let Ok(st) = dir.stat(&name) else { continue };
            let meta = meta_of(&st);
            if matches!(kind(&st), SFlag::S_IFREG | SFlag::S_IFDIR) {
                entries.push(Entry { name, is_dir: meta.is_dir, size: meta.size });
                if entries.len() == max {
                    break;
                }
            }
        }
        Ok((entries, names.len() > 0))
    }

    fn open(&self, path: &FilePath) -> Result<Body, StoreError> {
        // Non-blocking: a FIFO swapped in cannot hold the server; no effect on files.
        let fd = self.root.open(path.to_relative(), OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(classify)?;
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
        if parent.lstat(name).is_ok_and(|st| kind(&st) == SFlag::S_IFDIR) {
            return Err(StoreError::WrongKind);
        }
        let tmp_name = format!("{id:016x}-{}.part", self.next.fetch_add(1, Ordering::Relaxed));
        let file = self.tmp.create_new(&tmp_name, 0o644).map_err(classify)?;
        Ok(Box::new(DiskSink { file: Some(file), tmp: self.tmp.clone(), tmp_name, parent, name: name.to_owned() }))
    }

    fn delete(&self, path: &FilePath) -> Result<(), StoreError> {
        let Some(name) = path.file_name() else { return Err(StoreError::WrongKind) };
        let parent = self.parent(path, false)?;
        match parent.unlink(name) {
            Ok(()) => Ok(parent.sync().map_err(classify)?),
            Err(Errno::EISDIR) => Err(StoreError::WrongKind),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A partial upload in `.warren/tmp`, renamed into place on commit.
struct DiskSink {
    /// `None` once committed or aborted.
    file: Option<File>,
    tmp: Arc<Dir>,
    tmp_name: String,
    parent: Dir,
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
            let _ = self.tmp.unlink(&self.tmp_name);
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
        if let Err(e) = self.tmp.rename(&self.tmp_name, &self.parent, &self.name) {
            let _ = self.tmp.unlink(&self.tmp_name);
            return Err(match e {
                Errno::EISDIR | Errno::ENOTEMPTY => StoreError::WrongKind,
                e => classify(e),
            });
        }
        // The rename is durable once the directory holding the new name is.
        self.parent.sync().map_err(classify)?;
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
            let _ = tmp.unlink(&name);
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
