//! A frozen agent as a value: everything needed to resume it on another host, encoded with
//! postcard and sealed with a SHA-256 over its content, so that damage or truncation on the
//! way is caught on arrival, before any of it is believed.
//!
//! The encoding: [`MAGIC`], the body's length (8 bytes, little-endian), the postcard body, and
//! the SHA-256 of everything before it (32 bytes).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::mobility::prepare::{PAGE, WASM_PAGE};
use crate::{Limits, ModuleId, Value};

/// The first bytes of every encoded snapshot: its format and version.
pub const MAGIC: &[u8; 16] = b"warren-snapshot1";

const HASH: usize = 32;

/// A frozen agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The original module's id; the destination must have admitted and prepared it.
    pub module: ModuleId,
    /// The id of the transformed code the stack was unwound from; resumed only into the same.
    pub prepared: ModuleId,
    /// The entry the agent was started at, called again to rewind.
    pub entry: String,
    /// Its arguments.
    pub args: Vec<Value>,
    /// Where the agent asked to go (`migrate`'s argument); empty when the host froze it.
    pub dest: String,
    /// How many times it has been frozen, this time included.
    pub hops: u32,
    /// The size of its linear memory, in 64 KiB WebAssembly pages.
    pub memory_pages: u32,
    /// The indexes of the 4 KiB pages that differ from the module's initial image, ascending.
    pub dirty: Vec<u32>,
    /// Those pages' bytes, one after another.
    #[serde(with = "serde_bytes")]
    pub pages: Vec<u8>,
    /// Its exported mutable globals, by export name.
    pub globals: Vec<(String, Value)>,
    /// The Asyncify data: its 8-byte header and the unwound call stack.
    #[serde(with = "serde_bytes")]
    pub stack: Vec<u8>,
    /// Fuel left.
    pub fuel: u64,
    /// Wall time used so far, in epoch ticks.
    pub ticks: u64,
    /// Its limits, as it was started with.
    pub limits: Limits,
    /// Its resource table: the capabilities it holds and where each is held.
    pub resources: Vec<Resource>,
    /// Its input.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// What it has written so far.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Its log lines so far.
    pub log: Vec<String>,
    /// Log lines dropped so far.
    pub log_dropped: u64,
}

/// One entry of an agent's resource table: defined with the binding table.
pub use crate::binding::Resource;

/// Why bytes are not a snapshot this host will look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// They do not start with [`MAGIC`].
    #[error("not a warren snapshot (or one of another version)")]
    NotASnapshot,
    /// Fewer bytes than the snapshot says it has.
    #[error("the snapshot is truncated: {got} bytes of {expected}")]
    Truncated {
        /// The bytes it should have.
        expected: u64,
        /// The bytes it has.
        got: usize,
    },
    /// The content does not match its SHA-256.
    #[error("the snapshot's content does not match its SHA-256: damaged or forged")]
    Damaged,
    /// The hash matches but the body does not decode.
    #[error("the snapshot does not decode: {0}")]
    Malformed(String),
    /// It decodes, but does not describe a state this host could resume.
    #[error("the snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl Snapshot {
    /// The snapshot as bytes, sealed with its hash.
    pub fn encode(&self) -> Vec<u8> {
        // Encoded in place after the header, into room for the bulk of it, so the pages are
        // copied once.
        let bulk = self.pages.len() + self.stack.len() + self.input.len() + self.output.len();
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + bulk + 4096 + HASH);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[0; 8]);
        let mut out = postcard::to_extend(self, out).expect("postcard encodes a snapshot");
        let len = (out.len() - MAGIC.len() - 8) as u64;
        out[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&len.to_le_bytes());
        let hash = Sha256::digest(&out);
        out.extend_from_slice(&hash);
        out
    }

    /// Decodes and verifies `bytes`: format, length, hash, then the content's own consistency.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let header = MAGIC.len() + 8;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let len = bytes.get(MAGIC.len()..header).map(|len| u64::from_le_bytes(len.try_into().expect("8 bytes")));
        let expected = len.map_or(u64::MAX, |len| len.saturating_add((header + HASH) as u64));
        if (bytes.len() as u64) < expected {
            return Err(SnapshotError::Truncated { expected, got: bytes.len() });
        }
        let sealed = expected as usize - HASH;
        if bytes.len() != expected as usize || Sha256::digest(&bytes[..sealed])[..] != bytes[sealed..] {
            return Err(SnapshotError::Damaged);
        }
        let snapshot: Snapshot = postcard::from_bytes(&bytes[header..sealed])
            .map_err(|error| SnapshotError::Malformed(error.to_string()))?;
        snapshot.check()?;
        Ok(snapshot)
    }

    /// The checks that need no host: pages inside memory, memory inside its limit, a stack
    /// whose header agrees with its length.
    pub fn check(&self) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Inconsistent(why));
        let memory = self.memory_pages as usize * WASM_PAGE;
        if memory > self.limits.memory {
            return bad(format!("{memory} bytes of memory, over its own limit of {}", self.limits.memory));
        }
        if self.pages.len() != self.dirty.len() * PAGE {
            return bad(format!("{} dirty pages but {} bytes of them", self.dirty.len(), self.pages.len()));
        }
        if !self.dirty.windows(2).all(|pair| pair[0] < pair[1]) {
            return bad("the dirty pages are not in order".into());
        }
        if self.dirty.last().is_some_and(|last| *last as usize >= memory / PAGE) {
            return bad("a dirty page lies outside its memory".into());
        }
        let header = |at: usize| self.stack.get(at..at + 4).map(|word| u32::from_le_bytes(word.try_into().expect("4")));
        match (header(0), header(4)) {
            (Some(current), Some(end))
                if current as usize == self.stack.len() && current <= end && end as usize <= memory => {}
            _ => return bad("its Asyncify stack does not match its header".into()),
        }
        Ok(())
    }

    /// Bytes of memory it carries.
    pub fn memory_bytes(&self) -> usize {
        self.pages.len()
    }

    /// The wall time it has used, as a duration.
    pub fn wall_used(&self) -> Duration {
        crate::EPOCH_TICK.saturating_mul(u32::try_from(self.ticks).unwrap_or(u32::MAX))
    }
}
