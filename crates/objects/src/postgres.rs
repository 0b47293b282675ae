//! Persistent objects in PostgreSQL, for servers that share them (or an operator who already
//! runs PostgreSQL): the same contract as [`SqliteStore`](crate::SqliteStore), one table,
//! optimistic concurrency by version in one `UPDATE … WHERE version = $n`.
//!
//! The store's calls block (objects run on their policy's threads), so it keeps a small tokio
//! runtime of its own for `tokio-postgres`. A connection that breaks (the database restarted)
//! is made again at the next call; the call that saw the break fails, and nothing it did is
//! acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::store::{Record, Store, StoreError};

/// How long connecting, and each statement, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    url: String,
    runtime: tokio::runtime::Runtime,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &redacted(&self.url)).finish()
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user[:password]@host:port/db`) and make the table.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("objects-postgres")
            .enable_all()
            .build()
            .map_err(backend)?;
        let store = Self { url: url.to_owned(), runtime, client: Mutex::new(None) };
        store.with(|client| async move {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS warren_objects (
                         id TEXT PRIMARY KEY,
                         name TEXT NOT NULL,
                         name_key TEXT NOT NULL UNIQUE,
                         class TEXT NOT NULL,
                         policy TEXT NOT NULL,
                         version BIGINT NOT NULL DEFAULT 0,
                         state BYTEA
                     )",
                )
                .await
        })?;
        Ok(store)
    }

    /// Run `f` on the connection (made now if there is none or it broke), bounded by
    /// [`TIMEOUT`].
    fn with<T, F>(&self, f: impl FnOnce(Arc<Client>) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = {
            let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref().filter(|c| !c.is_closed()) {
                Some(client) => client.clone(),
                None => {
                    let client = self.runtime.block_on(async {
                        let (client, connection) =
                            tokio::time::timeout(TIMEOUT, tokio_postgres::connect(&self.url, NoTls))
                                .await
                                .map_err(|_| {
                                    StoreError::Backend(format!("{}: connecting timed out", redacted(&self.url)))
                                })?
                                .map_err(|e| StoreError::Backend(format!("{}: {e}", redacted(&self.url))))?;
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::warn!(target: "warren", "objects: the PostgreSQL connection broke: {e}");
                            }
                        });
                        Ok::<_, StoreError>(Arc::new(client))
                    })?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        self.runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, f(client))
                .await
                .map_err(|_| backend("PostgreSQL did not answer in time"))?
                .map_err(backend)
        })
    }
}

impl Store for PostgresStore {
    fn records(&self) -> Result<Vec<Record>, StoreError> {
        let rows = self.with(|c| async move {
            c.query("SELECT id, name, class, policy FROM warren_objects ORDER BY name_key", &[]).await
        })?;
        Ok(rows.iter().map(|r| Record { id: r.get(0), name: r.get(1), class: r.get(2), policy: r.get(3) }).collect())
    }

    fn create(&self, record: &Record) -> Result<(), StoreError> {
        let r = record.clone();
        let inserted = self.with(|c| async move {
            c.execute(
                "INSERT INTO warren_objects (id, name, name_key, class, policy) VALUES ($1, $2, lower($2), $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&r.id, &r.name, &r.class, &r.policy],
            )
            .await
        })?;
        if inserted == 0 {
            return Err(StoreError::Exists(record.name.clone()));
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(|c| async move { c.execute("DELETE FROM warren_objects WHERE id = $1", &[&id]).await })?;
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let id = id.to_owned();
        let row = self.with(|c| async move {
            c.query_opt("SELECT version, state FROM warren_objects WHERE id = $1", &[&id]).await
        })?;
        Ok(row.and_then(|r| {
            let state: Option<Vec<u8>> = r.get(1);
            state.map(|s| (r.get::<_, i64>(0) as u64, s))
        }))
    }

    fn load_newer(&self, id: &str, held: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (id, held) = (id.to_owned(), held as i64);
        let row = self.with(|c| async move {
            c.query_opt("SELECT version, state FROM warren_objects WHERE id = $1 AND version <> $2", &[&id, &held])
                .await
        })?;
        Ok(row.and_then(|r| {
            let state: Option<Vec<u8>> = r.get(1);
            state.map(|s| (r.get::<_, i64>(0) as u64, s))
        }))
    }

    fn save(&self, id: &str, expected: u64, state: &[u8]) -> Result<u64, StoreError> {
        let (id, state, version) = (id.to_owned(), state.to_vec(), expected as i64);
        let changed = self.with(|c| async move {
            c.execute(
                "UPDATE warren_objects SET state = $1, version = version + 1 WHERE id = $2 AND version = $3",
                &[&state, &id, &version],
            )
            .await
        })?;
        if changed == 0 {
            return Err(StoreError::Conflict { expected });
        }
        Ok(expected + 1)
    }

    fn describe(&self) -> String {
        redacted(&self.url)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(super::redacted("postgres://app:secret@db:5432/objects"), "postgres://app@db:5432/objects");
        assert_eq!(super::redacted("postgres://db/objects"), "postgres://db/objects");
    }
}
