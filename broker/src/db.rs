//! Session records in an embedded SQLite database, so a restart loses
//! nothing.

use rindle_upload::broker::Asset;
use rindle_upload::Session;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What the broker keeps per session: the mirrored record plus what the
/// client declared and, once completed, the asset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub session: Session,
    pub filename: String,
    pub content_type: String,
    /// The part size a multipart session was planned with.
    #[serde(default)]
    pub part_size: Option<u64>,
    pub asset: Option<Asset>,
    /// How many times the stored record changed when this copy was read:
    /// a save succeeds only if nobody saved in between.
    #[serde(skip)]
    pub revision: u64,
}

#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    /// The record changed since it was read (a concurrent call saved it).
    Changed,
    /// A stored record is not one this program can read.
    Unreadable(serde_json::Error),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            DbError::Changed => f.write_str("the record changed while it was being updated"),
            DbError::Unreadable(e) => write!(f, "a stored record is unreadable: {e}"),
        }
    }
}

pub struct Db(Mutex<Connection>);

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL);",
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS initiations (key TEXT PRIMARY KEY, session_id TEXT NOT NULL);",
        )?;
        // Databases made before revisions were kept gain the column.
        let has_revision = conn.prepare("SELECT revision FROM sessions LIMIT 0").is_ok();
        if !has_revision {
            conn.execute_batch("ALTER TABLE sessions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")?;
        }
        Ok(Db(Mutex::new(conn)))
    }

    /// The connection; a panic elsewhere while it was held leaves nothing
    /// half-written (every change is one statement), so the lock is taken
    /// back rather than failing every later request.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Result<Option<Record>, DbError> {
        let found: Option<(String, u64)> = self
            .conn()
            .query_row("SELECT record, revision FROM sessions WHERE id = ?1", [id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((json, revision)) = found else { return Ok(None) };
        let record: Record = serde_json::from_str(&json).map_err(DbError::Unreadable)?;
        Ok(Some(Record { revision, ..record }))
    }

    /// Stores a new record.
    pub fn insert(&self, record: &Record) -> Result<(), DbError> {
        let json = serde_json::to_string(record).map_err(DbError::Unreadable)?;
        self.conn().execute(
            "INSERT INTO sessions (id, record, revision) VALUES (?1, ?2, 0)",
            params![record.session.id, json],
        )?;
        Ok(())
    }

    /// The session an `initiate` with this idempotency key created.
    pub fn session_initiated_as(&self, key: &str) -> Result<Option<String>, DbError> {
        let conn = self.conn();
        let found = conn
            .query_row("SELECT session_id FROM initiations WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(found)
    }

    /// Stores a new record created by an `initiate` with this idempotency
    /// key, both in one transaction.
    pub fn insert_initiated(&self, record: &Record, key: &str) -> Result<(), DbError> {
        let json = serde_json::to_string(record).map_err(DbError::Unreadable)?;
        let mut conn = self.conn();
        let transaction = conn.transaction()?;
        transaction.execute(
            "INSERT INTO sessions (id, record, revision) VALUES (?1, ?2, 0)",
            params![record.session.id, json],
        )?;
        transaction.execute(
            "INSERT INTO initiations (key, session_id) VALUES (?1, ?2)",
            params![key, record.session.id],
        )?;
        Ok(transaction.commit()?)
    }

    /// Writes a record read earlier, if the stored one has not changed since
    /// (`DbError::Changed` otherwise): a call never overwrites what a
    /// concurrent call on the same session saved.
    pub fn save(&self, record: &mut Record) -> Result<(), DbError> {
        let json = serde_json::to_string(record).map_err(DbError::Unreadable)?;
        let changed = self.conn().execute(
            "UPDATE sessions SET record = ?2, revision = revision + 1 WHERE id = ?1 AND revision = ?3",
            params![record.session.id, json, record.revision],
        )?;
        if changed == 0 {
            return Err(DbError::Changed);
        }
        record.revision += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db_path() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rindle-db-{}.sqlite", uuid::Uuid::new_v4()))
    }

    /// A record of session `s1` in `state`.
    fn record(state: &str) -> Record {
        let session: Session = serde_json::from_value(
            serde_json::json!({"id": "s1", "state": state, "upload_strategy": "presigned_put"}),
        )
        .unwrap();
        Record {
            session,
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            part_size: None,
            asset: None,
            revision: 0,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let path = temp_db_path();
        let record = record("signed");
        Db::open(&path).unwrap().insert(&record).unwrap();
        let reopened = Db::open(&path).unwrap();
        let back = reopened.get("s1").unwrap().unwrap();
        assert_eq!(back.session, record.session);
        assert_eq!(back.filename, "a.txt");
        assert!(reopened.get("s2").unwrap().is_none());
    }

    #[test]
    fn a_record_changed_meanwhile_is_not_overwritten() {
        let db = Db::open(&temp_db_path()).unwrap();
        db.insert(&record("uploading")).unwrap();
        let (mut status_call, mut cancel_call) =
            (db.get("s1").unwrap().unwrap(), db.get("s1").unwrap().unwrap());
        cancel_call.session.state = rindle_upload::SessionState::Aborted;
        db.save(&mut cancel_call).unwrap();
        status_call.session.last_known_offset = Some(5);
        assert!(matches!(db.save(&mut status_call), Err(DbError::Changed)));
        let stored = db.get("s1").unwrap().unwrap();
        assert_eq!(stored.session.state, rindle_upload::SessionState::Aborted, "the cancel stands");
        db.save(&mut cancel_call).unwrap();
        assert_eq!(db.get("s1").unwrap().unwrap().revision, 2);
    }
}
