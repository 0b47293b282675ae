//! The lease journal: what the [`LeaseHub`](crate::LeaseHub) must remember across a crash,
//! appended and `fsync`ed before anyone relies on it.
//!
//! ```text
//! record  = length:u32be checksum:u32be payload    (checksum: FNV-1a of the payload, folded)
//! payload = kind:u8 fields                          (numbers big-endian, strings u16be-prefixed)
//! ```
//!
//! A crash can tear the last record; replay stops at the first record that is short or fails
//! its checksum, and the file is cut there. On open the journal is rewritten as a snapshot of
//! what is still live (temporary file, `fsync`, `rename`, `fsync` of the directory), so it
//! never grows with history; the hub asks for a new snapshot when it has grown.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One journaled fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `client` holds a lease on `path` until `until_ms` (Unix milliseconds).
    Grant { client: u64, path: String, until_ms: u64 },
    /// `path` is about to change (an upload or delete is committing).
    Intent { path: String },
    /// `path` changed: every lease on it is broken; the callbacks are owed.
    Changed { path: String },
    /// `client` received its callback for `path`: nothing is owed any more.
    Delivered { client: u64, path: String },
    /// Snapshot form: `client` is owed a callback for `path` until `until_ms`.
    Owed { client: u64, path: String, until_ms: u64 },
}

/// Where the hub writes its records.
pub trait Journal: Send + 'static {
    /// Append `records`; durable when this returns.
    fn append(&mut self, records: &[Record]) -> io::Result<()>;
    /// Replace everything with `records` (a snapshot), atomically and durably.
    fn rewrite(&mut self, records: &[Record]) -> io::Result<()>;
}

/// The most bytes one record may claim: a longer length is a torn or foreign file.
const MAX_RECORD: usize = 4 + 8 + 2 + crate::wire::MAX_PATH * 4 + 8;

fn checksum(payload: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in payload {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Vec::with_capacity(32);
        let string = |p: &mut Vec<u8>, s: &str| {
            p.extend_from_slice(&(s.len() as u16).to_be_bytes());
            p.extend_from_slice(s.as_bytes());
        };
        match self {
            Record::Grant { client, path, until_ms } | Record::Owed { client, path, until_ms } => {
                p.push(if matches!(self, Record::Grant { .. }) { 1 } else { 5 });
                p.extend_from_slice(&client.to_be_bytes());
                p.extend_from_slice(&until_ms.to_be_bytes());
                string(&mut p, path);
            }
            Record::Intent { path } | Record::Changed { path } => {
                p.push(if matches!(self, Record::Intent { .. }) { 2 } else { 3 });
                string(&mut p, path);
            }
            Record::Delivered { client, path } => {
                p.push(4);
                p.extend_from_slice(&client.to_be_bytes());
                string(&mut p, path);
            }
        }
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(&checksum(&p).to_be_bytes());
        out.extend_from_slice(&p);
    }

    fn decode(p: &[u8]) -> Option<Record> {
        let (&kind, mut rest) = p.split_first()?;
        let mut u64_ = || -> Option<u64> {
            let (head, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            Some(u64::from_be_bytes(*head))
        };
        let (client, until) = match kind {
            1 | 5 => (u64_()?, u64_()?),
            4 => (u64_()?, 0),
            _ => (0, 0),
        };
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() != len {
            return None;
        }
        let path = String::from_utf8(tail.to_vec()).ok()?;
        Some(match kind {
            1 => Record::Grant { client, path, until_ms: until },
            2 => Record::Intent { path },
            3 => Record::Changed { path },
            4 => Record::Delivered { client, path },
            5 => Record::Owed { client, path, until_ms: until },
            _ => return None,
        })
    }
}

/// The records in `bytes` up to the first torn or corrupt one, and how many bytes they take.
pub fn replay(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len).filter(|_| len <= MAX_RECORD) else { break };
        let Some(record) = Record::decode(payload).filter(|_| checksum(payload) == sum) else { break };
        records.push(record);
        at += 8 + len;
    }
    (records, at)
}

/// A journal in a file.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    file: File,
}

impl FileJournal {
    /// Open (or create) the journal at `path`: its records, then the file rewritten to hold
    /// exactly those (a torn tail is dropped).
    pub fn open(path: impl AsRef<Path>) -> io::Result<(Self, Vec<Record>)> {
        let path = path.as_ref().to_path_buf();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (records, _) = replay(&bytes);
        let file = OpenOptions::new().append(true).create(true).open(&path)?;
        let mut journal = Self { path, file };
        journal.rewrite(&records)?;
        Ok((journal, records))
    }
}

impl Journal for FileJournal {
    fn append(&mut self, records: &[Record]) -> io::Result<()> {
        let mut bytes = Vec::new();
        records.iter().for_each(|r| r.encode(&mut bytes));
        self.file.write_all(&bytes)?;
        self.file.sync_data()
    }

    fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        let mut bytes = Vec::new();
        records.iter().for_each(|r| r.encode(&mut bytes));
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// A journal in memory that outlives its hub: tests "crash" a hub and start another from the
/// same records.
#[derive(Clone, Debug, Default)]
pub struct MemJournal(pub Arc<Mutex<Vec<Record>>>);

impl MemJournal {
    /// Everything journaled so far.
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Journal for MemJournal {
    fn append(&mut self, records: &[Record]) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(records);
        Ok(())
    }

    fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = records.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Grant { client: 7, path: "/a".into(), until_ms: 1_000 },
            Record::Intent { path: "/a".into() },
            Record::Changed { path: "/a".into() },
            Record::Delivered { client: 7, path: "/a".into() },
            Record::Owed { client: 9, path: "/b/é".into(), until_ms: u64::MAX },
        ]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut bytes = Vec::new();
        sample().iter().for_each(|r| r.encode(&mut bytes));
        assert_eq!(replay(&bytes), (sample(), bytes.len()));
        for cut in 0..bytes.len() {
            let (records, used) = replay(&bytes[..cut]);
            assert!(used <= cut && sample().starts_with(&records), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(replay(&flipped).0, sample()[..4], "a corrupt record ends the replay");
    }

    #[test]
    fn a_file_journal_survives_reopening_and_drops_a_torn_record() {
        let dir = std::env::temp_dir().join(format!("warren-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.journal");
        let (mut journal, records) = FileJournal::open(&path).unwrap();
        assert!(records.is_empty());
        journal.append(&sample()).unwrap();
        drop(journal);
        // A crash in the middle of the next append.
        let mut torn = Vec::new();
        Record::Intent { path: "/torn".into() }.encode(&mut torn);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 2]).unwrap();
        drop(f);
        let (mut journal, records) = FileJournal::open(&path).unwrap();
        assert_eq!(records, sample());
        journal.rewrite(&sample()[..1]).unwrap();
        assert_eq!(FileJournal::open(&path).unwrap().1, sample()[..1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
