//! Snapshots too large for one frame, staged part by part until the arrival that names them.
//! Bounded three ways, since any peer may send parts: each upload by the host's snapshot limit
//! (refused at its first part, before any of it is held), the uploads at once by
//! [`MAX_UPLOADS`], and their life by [`IDLE`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use crate::wire::{PART, Part};

/// Uploads a host receives at once.
pub const MAX_UPLOADS: usize = 4;

/// An upload that has not grown for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(30);

/// The uploads in progress or complete, by the sender's name for them.
#[derive(Debug, Default)]
pub struct Staging {
    uploads: HashMap<u64, Upload>,
}

#[derive(Debug)]
struct Upload {
    total: u64,
    bytes: Vec<u8>,
    touched: Instant,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl Staging {
    /// Adds `part` to its upload: the bytes held of it now. `limit` is the most a snapshot
    /// may be on this host.
    pub fn add(&mut self, part: Part, limit: usize, now: Instant) -> Result<u64, String> {
        self.uploads.retain(|_, upload| now.duration_since(upload.touched) < IDLE);
        if part.total > limit as u64 {
            return Err(format!(
                "the snapshot is {}, over this host's limit of {} (max_snapshot_mib)",
                mib(part.total),
                mib(limit as u64)
            ));
        }
        if part.bytes.len() > PART {
            return Err(format!("a part carries at most {PART} bytes, not {}", part.bytes.len()));
        }
        let full = self.uploads.len() >= MAX_UPLOADS;
        let upload = match self.uploads.entry(part.upload) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) if part.offset != 0 => return Err("an upload must start at offset 0".into()),
            Entry::Vacant(_) if full => return Err(format!("this host already receives {MAX_UPLOADS} snapshots")),
            Entry::Vacant(entry) => {
                // The whole is reserved at once: it is within the limit, and growing it part by
                // part would copy it again at each doubling.
                let bytes = Vec::with_capacity(part.total as usize);
                entry.insert(Upload { total: part.total, bytes, touched: now })
            }
        };
        let end = part.offset.saturating_add(part.bytes.len() as u64);
        if part.total != upload.total || part.offset != upload.bytes.len() as u64 || end > upload.total {
            let (held, total) = (upload.bytes.len(), upload.total);
            self.uploads.remove(&part.upload);
            return Err(format!(
                "part at {} of {} bytes does not follow the {held} bytes held of {total}: upload dropped",
                part.offset, part.total
            ));
        }
        upload.bytes.extend_from_slice(&part.bytes);
        upload.touched = now;
        Ok(upload.bytes.len() as u64)
    }

    /// The whole of a complete upload, taken out of staging.
    pub fn take(&mut self, upload: u64) -> Result<Vec<u8>, String> {
        match self.uploads.remove(&upload) {
            None => Err(format!("no upload {upload} is staged here (its parts were never sent, or it lapsed)")),
            Some(staged) if (staged.bytes.len() as u64) < staged.total => {
                let held = staged.bytes.len();
                self.uploads.insert(upload, staged);
                Err(format!("upload {upload} is incomplete: {held} bytes"))
            }
            Some(staged) => Ok(staged.bytes),
        }
    }

    /// Stages a whole taken by [`Staging::take`] again, for an arrival that will be sent once
    /// more (with its module).
    pub fn put_back(&mut self, upload: u64, bytes: Vec<u8>, now: Instant) {
        self.uploads.insert(upload, Upload { total: bytes.len() as u64, bytes, touched: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(upload: u64, total: u64, offset: u64, len: usize) -> Part {
        Part { upload, total, offset, bytes: vec![offset as u8; len] }
    }

    #[test]
    fn parts_in_order_make_the_whole() {
        let (mut staging, now) = (Staging::default(), Instant::now());
        assert_eq!(staging.add(part(1, 10, 0, 4), 100, now), Ok(4));
        assert!(staging.take(1).unwrap_err().contains("incomplete: 4 bytes"));
        assert_eq!(staging.add(part(1, 10, 4, 6), 100, now), Ok(10));
        assert_eq!(staging.take(1).unwrap(), [0, 0, 0, 0, 4, 4, 4, 4, 4, 4]);
        assert!(staging.take(1).unwrap_err().contains("no upload 1"));
    }

    #[test]
    fn over_the_limit_out_of_order_and_too_many_are_refused() {
        let (mut staging, now) = (Staging::default(), Instant::now());
        let over = staging.add(part(1, 3 << 20, 0, 4), 2 << 20, now).unwrap_err();
        assert!(over.contains("3.0 MiB, over this host's limit of 2.0 MiB"), "{over}");
        assert!(staging.add(part(1, 10, 4, 4), 100, now).unwrap_err().contains("offset 0"));
        staging.add(part(2, 10, 0, 4), 100, now).unwrap();
        assert!(staging.add(part(2, 10, 6, 4), 100, now).unwrap_err().contains("upload dropped"));
        assert!(staging.take(2).is_err(), "a gap drops the upload");
        for upload in 0..MAX_UPLOADS as u64 {
            staging.add(part(10 + upload, 10, 0, 1), 100, now).unwrap();
        }
        assert!(staging.add(part(99, 10, 0, 1), 100, now).unwrap_err().contains("already receives"));
        // Idle uploads lapse, which makes room.
        assert_eq!(staging.add(part(99, 10, 0, 1), 100, now + IDLE), Ok(1));
    }
}
