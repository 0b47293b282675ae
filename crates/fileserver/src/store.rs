//! What the session needs from storage, as a trait: the session stays free of the file system
//! (its tests run on [`MemStore`]), and [`DiskStore`](crate::DiskStore) implements it over a
//! real root with durable writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use crate::path::FilePath;
use crate::wire::{Entry, ErrorCode, Meta};

/// Files beneath one root.
///
/// Calls may block on the disk; drivers call sessions from threads where that is acceptable.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    fn stat(&self, path: &FilePath) -> Result<Meta, StoreError>;
    /// A directory's entries whose names sort after `after`, sorted by name, at most `max` of
    /// them, without the server's own state directory; and whether more follow.
    fn list(&self, path: &FilePath, after: &str, max: usize) -> Result<(Vec<Entry>, bool), StoreError>;
    /// A regular file, open for reading.
    fn open(&self, path: &FilePath) -> Result<Body, StoreError>;
    /// Start writing `path` under upload `id`: a partial file nobody else can see.
    fn create(&self, path: &FilePath, id: u64) -> Result<Box<dyn Sink>, StoreError>;
    /// Remove a regular file, durably.
    fn delete(&self, path: &FilePath) -> Result<(), StoreError>;
}

/// An upload being written. Dropped without [`Sink::commit`], it must leave nothing behind.
pub trait Sink: Send {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Make the bytes written so far durable (before the change is journaled).
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Put the file in place atomically and durably: afterwards `path` names the whole upload,
    /// also after a crash; before, it names the old file or nothing.
    fn commit(self: Box<Self>) -> Result<Meta, StoreError>;
    /// Remove the partial file.
    fn abort(self: Box<Self>);
    /// What removes the partial file's name from any thread, while a write may be in progress
    /// on another: a cancel from the control endpoint then answers without waiting for that
    /// write (whose thread may not even be running). `None`: only [`Sink::abort`] removes it.
    fn discarder(&self) -> Option<Discarder> {
        None
    }
}

/// Removes a partial file's name; see [`Sink::discarder`]. Calling it more than once, or after
/// the sink removed the file itself, is harmless.
pub type Discarder = Arc<dyn Fn() + Send + Sync>;

/// A file to send: its description and its bytes.
#[derive(Debug)]
pub struct Body {
    pub meta: Meta,
    pub data: BodyData,
}

/// Where a file's bytes are.
#[derive(Debug)]
pub enum BodyData {
    /// An open file, sent with `sendfile`.
    File(Arc<File>),
    /// Bytes in memory.
    Bytes(Vec<u8>),
}

/// Why storage said no; each maps to the error code a client sees.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("a directory where a file was wanted, or the other way round")]
    WrongKind,
    /// Out of the root (a symlink out), or not a regular file or directory.
    #[error("forbidden")]
    Forbidden,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::WrongKind => ErrorCode::WrongKind,
            Self::Forbidden => ErrorCode::BadPath,
            Self::Io(_) => ErrorCode::Io,
        }
    }
}

/// An in-memory store for tests: files only, directories implied by their paths.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<FilePath, (Vec<u8>, u64)>,
    next_version: u64,
    /// Uploads started and neither committed nor aborted: what a crash would leave behind.
    partials: usize,
}

impl MemStore {
    /// A file's bytes, if it exists.
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        let path = FilePath::parse(path).ok()?;
        self.lock().files.get(&path).map(|(data, _)| data.clone())
    }

    /// How many uploads are in progress.
    pub fn partials(&self) -> usize {
        self.lock().partials
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn mem_meta(data: &[u8], version: u64) -> Meta {
    Meta { is_dir: false, size: data.len() as u64, version, modified_ms: 0 }
}

impl Store for MemStore {
    fn stat(&self, path: &FilePath) -> Result<Meta, StoreError> {
        let state = self.lock();
        if let Some((data, version)) = state.files.get(path) {
            return Ok(mem_meta(data, *version));
        }
        let is_dir = path.is_root() || state.files.keys().any(|p| p.names().starts_with(path.names()));
        if is_dir { Ok(Meta { is_dir: true, size: 0, version: 0, modified_ms: 0 }) } else { Err(StoreError::NotFound) }
    }

    fn list(&self, path: &FilePath, after: &str, max: usize) -> Result<(Vec<Entry>, bool), StoreError> {
        let state = self.lock();
        if state.files.contains_key(path) {
            return Err(StoreError::WrongKind);
        }
        let depth = path.names().len();
        let mut entries = BTreeMap::new();
        for (p, (data, _)) in &state.files {
            if p.names().len() > depth && p.names().starts_with(path.names()) {
                let is_dir = p.names().len() > depth + 1;
                let size = if is_dir { 0 } else { data.len() as u64 };
                entries.insert(p.names()[depth].clone(), (is_dir, size));
            }
        }
        if entries.is_empty() && !path.is_root() {
            return Err(StoreError::NotFound);
        }
        let mut entries: Vec<Entry> = entries
            .into_iter()
            .filter(|(name, _)| name.as_str() > after)
            .map(|(name, (is_dir, size))| Entry { name, is_dir, size })
            .collect();
        let more = entries.len() > max;
        entries.truncate(max);
        Ok((entries, more))
    }

    fn open(&self, path: &FilePath) -> Result<Body, StoreError> {
        match self.lock().files.get(path) {
            Some((data, version)) => Ok(Body { meta: mem_meta(data, *version), data: BodyData::Bytes(data.clone()) }),
            None => Err(StoreError::NotFound),
        }
    }

    fn create(&self, path: &FilePath, _id: u64) -> Result<Box<dyn Sink>, StoreError> {
        if path.is_root() {
            return Err(StoreError::WrongKind);
        }
        self.lock().partials += 1;
        Ok(Box::new(MemSink { state: self.state.clone(), path: path.clone(), data: Vec::new(), done: false }))
    }

    fn delete(&self, path: &FilePath) -> Result<(), StoreError> {
        self.lock().files.remove(path).map(|_| ()).ok_or(StoreError::NotFound)
    }
}

struct MemSink {
    state: Arc<Mutex<MemState>>,
    path: FilePath,
    data: Vec<u8>,
    done: bool,
}

impl MemSink {
    fn finish(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).partials -= 1;
        }
    }
}

impl Sink for MemSink {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<Meta, StoreError> {
        self.finish();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_version += 1;
        let version = state.next_version;
        let data = std::mem::take(&mut self.data);
        let meta = mem_meta(&data, version);
        state.files.insert(self.path.clone(), (data, version));
        Ok(meta)
    }

    fn abort(mut self: Box<Self>) {
        self.finish();
    }
}

impl Drop for MemSink {
    fn drop(&mut self) {
        self.finish();
    }
}
