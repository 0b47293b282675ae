//! The embedded store's write-ahead journal: what makes a write durable before its answer.
//!
//! A redb commit writes several pages across its file (the changed tree nodes, the allocator's
//! state, the header twice) and then syncs; one small write at the end of a file whose blocks
//! are already written costs one `fdatasync` and nothing else (no metadata: the file does not
//! grow). So each batch of changes is appended here as one record and synced, and the redb file
//! takes the changes later, in one durable commit per journal's worth (a **checkpoint**), as
//! etcd's write-ahead log stands in front of its bbolt file.
//!
//! **Layout.** The file is [`SIZE`] bytes, written with zeros when it is created, so that an
//! append never allocates a block. Records follow each other from offset 0:
//! `len: u32 LE | crc32(body): u32 LE | body`, the body a postcard [`Record`] carrying the
//! journal's *epoch* and the record's sequence number within it. A zero `len` ends the
//! records.
//!
//! **Epochs.** A checkpoint stores the next epoch in the redb file in the same durable commit
//! as the changes, then writes from offset 0 again. Replay reads records from offset 0 while
//! each is whole (its checksum holds), of the stored epoch, and numbered one past the one
//! before; so records of an earlier epoch past the end, and a record cut by a crash (never
//! acknowledged: its answer waits for the sync), are never replayed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use warren_registry::model::{LeaseId, Name};

use crate::state::{Dirty, LeaseRecord, NameRecord};

/// The journal's size: at about 200 bytes a write, some 80,000 writes between checkpoints, and
/// a replay of at most this much at startup.
pub const SIZE: u64 = 16 << 20;
/// The smallest size [`Journal::open`] takes: room for a batch of small records.
pub const MIN_SIZE: u64 = 4 << 10;
const HEADER: usize = 8;

/// One batch of changes, as journalled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub epoch: u64,
    pub seq: u64,
    pub revision: u64,
    pub names: Vec<(Name, Option<NameRecord>)>,
    pub leases: Vec<(LeaseId, Option<LeaseRecord>)>,
}

/// The same, borrowed from the batch being written (postcard lays both out alike).
#[derive(Serialize)]
struct RecordRef<'a> {
    epoch: u64,
    seq: u64,
    revision: u64,
    names: &'a [(Name, Option<NameRecord>)],
    leases: &'a [(LeaseId, Option<LeaseRecord>)],
}

/// The journal being written.
#[derive(Debug)]
pub struct Journal {
    file: File,
    /// Its length, all written.
    size: u64,
    epoch: u64,
    seq: u64,
    offset: u64,
    /// Reused for each record.
    buf: Vec<u8>,
}

impl Journal {
    /// The records of `epoch` in the journal at `path` (none if there is no journal), in order.
    pub fn replay(path: &Path, epoch: u64) -> std::io::Result<Vec<Record>> {
        let mut data = Vec::new();
        match File::open(path) {
            Ok(mut f) => _ = f.read_to_end(&mut data)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        let mut records = Vec::new();
        let mut at = 0;
        while let Some(head) = data.get(at..at + HEADER) {
            let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
            let Some(body) = data.get(at + HEADER..at + HEADER + len).filter(|_| len > 0) else { break };
            if crc32fast::hash(body) != crc {
                break;
            }
            match postcard::from_bytes::<Record>(body) {
                Ok(r) if r.epoch == epoch && r.seq == records.len() as u64 => records.push(r),
                _ => break,
            }
            at += HEADER + len;
        }
        Ok(records)
    }

    /// Opens the journal at `path` for `epoch`, `size` bytes long (at least [`MIN_SIZE`]),
    /// writing from offset 0; writes it with zeros (synced, the directory too) if it is missing or
    /// shorter, so that no append allocates a block.
    pub fn open(path: &Path, epoch: u64, size: u64) -> std::io::Result<Journal> {
        let size = size.max(MIN_SIZE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        if len < size {
            file.seek(SeekFrom::Start(len))?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = size - len;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                file.write_all(&zeros[..n as usize])?;
                left -= n;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Journal { file, size: len.max(size), epoch, seq: 0, offset: 0, buf: Vec::new() })
    }

    /// Appends `dirty` as one record and syncs it. `Ok(false)`: it does not fit in what is
    /// left, and nothing was written (checkpoint, then [`Journal::restart`]).
    pub fn append(&mut self, dirty: &Dirty) -> std::io::Result<bool> {
        let record = RecordRef {
            epoch: self.epoch,
            seq: self.seq,
            revision: dirty.revision.0,
            names: &dirty.names,
            leases: &dirty.leases,
        };
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        let mut buf = postcard::to_extend(&record, std::mem::take(&mut self.buf)).map_err(std::io::Error::other)?;
        let len = buf.len() - HEADER;
        // Room is kept for a zero `len` after the last record, which ends the replay.
        if self.offset + buf.len() as u64 + HEADER as u64 > self.size {
            self.buf = buf;
            return Ok(false);
        }
        let crc = crc32fast::hash(&buf[HEADER..]);
        buf[..4].copy_from_slice(&u32::try_from(len).map_err(std::io::Error::other)?.to_le_bytes());
        buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        // The zero `len` after the record, in the same write: older records past it are not read.
        buf.extend_from_slice(&[0; HEADER]);
        self.file.write_all_at(&buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += (buf.len() - HEADER) as u64;
        self.seq += 1;
        self.buf = buf;
        Ok(true)
    }

    /// Writes from offset 0 again under `epoch`, which a durable commit has just stored.
    pub fn restart(&mut self, epoch: u64) {
        (self.epoch, self.seq, self.offset) = (epoch, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use warren_registry::model::{Endpoint, Revision};

    use super::*;

    fn dirty(i: u16) -> Dirty {
        let record = NameRecord { owner: [7; 32], endpoints: vec![(Endpoint::tcp(([127, 0, 0, 1], i).into()), None)] };
        Dirty {
            names: vec![(Name::new(format!("n{i}")).unwrap(), Some(record))],
            leases: vec![(LeaseId(u128::from(i)), None)],
            revision: Revision(u64::from(i)),
        }
    }

    fn scratch(what: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-journal-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("journal")
    }

    #[test]
    fn replays_the_records_of_its_epoch_in_order() {
        let path = scratch("order");
        let mut j = Journal::open(&path, 3, MIN_SIZE).unwrap();
        for i in 1..=5 {
            assert!(j.append(&dirty(i)).unwrap());
        }
        let revisions: Vec<u64> = Journal::replay(&path, 3).unwrap().iter().map(|r| r.revision).collect();
        assert_eq!(revisions, [1, 2, 3, 4, 5]);
        assert!(Journal::replay(&path, 4).unwrap().is_empty(), "another epoch's records are not replayed");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_restart_hides_the_longer_tail_of_the_epoch_before() {
        let path = scratch("restart");
        let mut j = Journal::open(&path, 1, MIN_SIZE).unwrap();
        for i in 1..=5 {
            j.append(&dirty(i)).unwrap();
        }
        j.restart(2);
        j.append(&dirty(6)).unwrap();
        let replayed = Journal::replay(&path, 2).unwrap();
        assert_eq!(replayed.iter().map(|r| r.revision).collect::<Vec<_>>(), [6]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_torn_record_ends_the_replay() {
        let path = scratch("torn");
        let mut j = Journal::open(&path, 1, MIN_SIZE).unwrap();
        for i in 1..=3 {
            j.append(&dirty(i)).unwrap();
        }
        // Corrupt one byte of the third record's body, as a write cut by a crash leaves it.
        let offset = j.offset - 3;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff], offset).unwrap();
        let replayed = Journal::replay(&path, 1).unwrap();
        assert_eq!(replayed.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_full_journal_refuses_the_record_and_writes_nothing() {
        let path = scratch("full");
        let mut j = Journal::open(&path, 1, MIN_SIZE).unwrap();
        j.offset = MIN_SIZE - 20;
        assert!(!j.append(&dirty(1)).unwrap());
        assert_eq!((j.offset, j.seq), (MIN_SIZE - 20, 0));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
