//! Where persistent objects live: their records (name, class, policy) and their state, with a
//! version for optimistic concurrency (a save names the version it read; if another writer got
//! there first, the save fails with `Conflict` and the object reloads).
//!
//! SQLite by default ([`SqliteStore`]); PostgreSQL where several servers share objects.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A persistent object's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub class: String,
    pub policy: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state changed since it was read.
    #[error("the object's state changed since it was read (version {expected} is gone)")]
    Conflict { expected: u64 },
    /// An object by that name exists.
    #[error("an object named {0:?} exists")]
    Exists(String),
    #[error("store: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A store of persistent objects. Calls block (they run on the objects' threads).
pub trait Store: Send + Sync {
    /// Every persistent object, to serve again after a restart.
    fn records(&self) -> Result<Vec<Record>, StoreError>;
    /// Add an object; its name (case-insensitive) must be free.
    fn create(&self, record: &Record) -> Result<(), StoreError>;
    /// Remove an object and its state.
    fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// The object's state and its version; `None` before the first save.
    fn load(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// The state and its version if its version is not `held` (another writer saved since
    /// `held` was read); `None` when it is, or when the object is gone. Asked before every call
    /// on a persistent object, so it is one indexed query that carries the state only when it
    /// moved.
    fn load_newer(&self, id: &str, held: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Replace the state saved at `expected` (0: none yet); returns the new version. Durable
    /// when it returns: the answer to the call that changed the state is sent after it.
    fn save(&self, id: &str, expected: u64, state: &[u8]) -> Result<u64, StoreError>;
    /// How the store is named in logs.
    fn describe(&self) -> String;
}

/// Objects in one SQLite file, in WAL mode with full sync: a save is on disk when it returns.
pub struct SqliteStore {
    db: Mutex<Connection>,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE COLLATE NOCASE,
                 class TEXT NOT NULL,
                 policy TEXT NOT NULL,
                 version INTEGER NOT NULL DEFAULT 0,
                 state BLOB
             )",
        )?;
        Ok(Self { db: Mutex::new(db), path: path.display().to_string() })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SqliteStore {
    fn records(&self) -> Result<Vec<Record>, StoreError> {
        let db = self.db();
        let mut query = db.prepare("SELECT id, name, class, policy FROM objects ORDER BY name")?;
        let rows = query
            .query_map([], |r| Ok(Record { id: r.get(0)?, name: r.get(1)?, class: r.get(2)?, policy: r.get(3)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn create(&self, record: &Record) -> Result<(), StoreError> {
        let inserted = self.db().execute(
            "INSERT INTO objects (id, name, class, policy) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![record.id, record.name, record.class, record.policy],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(record.name.clone()));
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.db().execute("DELETE FROM objects WHERE id = ?1", params![id])?;
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Option<Vec<u8>>)> = self
            .db()
            .query_row("SELECT version, state FROM objects WHERE id = ?1", params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(version, state)| state.map(|s| (version as u64, s))))
    }

    fn load_newer(&self, id: &str, held: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Option<Vec<u8>>)> = self
            .db()
            .prepare_cached("SELECT version, state FROM objects WHERE id = ?1 AND version <> ?2")?
            .query_row(params![id, held as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(version, state)| state.map(|s| (version as u64, s))))
    }

    fn save(&self, id: &str, expected: u64, state: &[u8]) -> Result<u64, StoreError> {
        let changed = self.db().execute(
            "UPDATE objects SET state = ?1, version = version + 1 WHERE id = ?2 AND version = ?3",
            params![state, id, expected as i64],
        )?;
        if changed == 0 {
            return Err(StoreError::Conflict { expected });
        }
        Ok(expected + 1)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> Record {
        Record { id: id.into(), name: name.into(), class: "counter".into(), policy: "per-object".into() }
    }

    #[test]
    fn a_save_that_lost_the_race_is_a_conflict() {
        let dir = std::env::temp_dir().join(format!("warren-objects-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("objects.db")).unwrap();
        store.create(&record("1", "Counter")).unwrap();
        assert!(matches!(store.create(&record("2", "counter")), Err(StoreError::Exists(_))), "names ignore case");
        assert_eq!(store.load("1").unwrap(), None);
        assert_eq!(store.save("1", 0, b"one").unwrap(), 1);
        assert!(matches!(store.save("1", 0, b"stale"), Err(StoreError::Conflict { expected: 0 })));
        assert_eq!(store.load("1").unwrap(), Some((1, b"one".to_vec())));
        assert_eq!(store.load_newer("1", 1).unwrap(), None, "the version held is the stored one");
        assert_eq!(store.load_newer("1", 0).unwrap(), Some((1, b"one".to_vec())));
        drop(store);
        let store = SqliteStore::open(&dir.join("objects.db")).unwrap();
        assert_eq!(store.records().unwrap(), vec![record("1", "Counter")]);
        store.remove("1").unwrap();
        assert!(store.records().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
