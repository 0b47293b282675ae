//! The `file` capability: one read-only file a host offers by name (a node's `files` under its
//! `files_dir`). A file is fixed to its host: an agent that moves reaches it through a global
//! reference back to its origin, or is rebound to the destination's file of the same name.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::binding::{Bind, FileAt, Reference, Resource};
use crate::caps::MAX_FILE_READ;
use crate::reference::{self, Answer, Call};

/// Where an agent's file is while it runs.
#[derive(Debug)]
pub(crate) enum FileStore {
    /// This host's file.
    Local(PathBuf),
    /// The origin's file, through a global reference.
    Remote(Reference),
}

/// An agent's file.
#[derive(Debug)]
pub(crate) struct FileHeld {
    pub(crate) store: FileStore,
    pub(crate) name: String,
    pub(crate) bind: Bind,
}

impl FileHeld {
    pub(crate) fn size(&self) -> Result<u64, String> {
        match &self.store {
            FileStore::Local(path) => size(path),
            FileStore::Remote(at) => match reference::call(at, Call::FileSize)? {
                Answer::Size(size) => Ok(size),
                other => Err(reference::unexpected(at, &other)),
            },
        }
    }

    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        let len = len.min(MAX_FILE_READ);
        match &self.store {
            FileStore::Local(path) => read_at(path, offset, len),
            FileStore::Remote(at) => match reference::call(at, Call::FileRead(offset, len as u32))? {
                Answer::Bytes(bytes) if bytes.len() <= len => Ok(bytes),
                other => Err(reference::unexpected(at, &other)),
            },
        }
    }

    /// Its entry in the snapshot's resource table.
    pub(crate) fn resource(&self) -> Resource {
        let at = match &self.store {
            FileStore::Local(_) => FileAt::Here,
            FileStore::Remote(at) => FileAt::Remote(at.clone()),
        };
        Resource::File { name: self.name.clone(), bind: self.bind, at }
    }
}

/// The size of the file at `path`.
pub(crate) fn size(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path).map(|meta| meta.len()).map_err(|error| format!("the file cannot be read: {error}"))
}

/// Up to `len` bytes of the file at `path` from `offset`.
pub(crate) fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let failed = |error: std::io::Error| format!("the file cannot be read: {error}");
    let mut file = std::fs::File::open(path).map_err(failed)?;
    file.seek(SeekFrom::Start(offset)).map_err(failed)?;
    let mut bytes = Vec::with_capacity(len.min(MAX_FILE_READ));
    file.take(len as u64).read_to_end(&mut bytes).map_err(failed)?;
    Ok(bytes)
}
