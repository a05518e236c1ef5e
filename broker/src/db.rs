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
    /// Who may act on the session: a digest of its creator's credential
    /// (never the credential itself).
    #[serde(default)]
    pub owner: Option<String>,
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

impl std::error::Error for DbError {}

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

/// The states in which a session may still take bytes (and so holds
/// resources), as SQL.
const OPEN_STATES: &str = "'initialized', 'signed', 'resuming', 'uploading'";

/// What queries select sessions by, kept beside each record.
struct Columns {
    state: &'static str,
    owner: Option<String>,
    upload_key: Option<String>,
    expires_unix: Option<u64>,
}

impl Columns {
    fn of(record: &Record) -> Columns {
        let session = &record.session;
        let expires = session.expires_at.as_deref().and_then(|t| humantime::parse_rfc3339(t).ok());
        Columns {
            state: session.state.as_str(),
            owner: record.owner.clone(),
            upload_key: session.upload_key.clone(),
            expires_unix: expires.map(crate::service::unix),
        }
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL);",
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS initiations (key TEXT PRIMARY KEY, session_id TEXT NOT NULL);",
        )?;
        // Databases made before these columns were kept gain them, filled
        // from the records.
        let mut filled = false;
        for (column, kind) in [
            ("revision", "INTEGER NOT NULL DEFAULT 0"),
            ("state", "TEXT"),
            ("owner", "TEXT"),
            ("upload_key", "TEXT"),
            ("expires_unix", "INTEGER"),
        ] {
            if conn.prepare(&format!("SELECT {column} FROM sessions LIMIT 0")).is_err() {
                conn.execute_batch(&format!("ALTER TABLE sessions ADD COLUMN {column} {kind}"))?;
                filled = true;
            }
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS sessions_by_key ON sessions (upload_key);
             CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner, state);",
        )?;
        let db = Db(Mutex::new(conn));
        if filled {
            db.fill_columns()?;
        }
        Ok(db)
    }

    fn fill_columns(&self) -> Result<(), DbError> {
        let rows: Vec<(String, String)> = {
            let conn = self.conn();
            let mut query = conn.prepare("SELECT id, record FROM sessions")?;
            let rows = query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, json) in rows {
            let record: Record = serde_json::from_str(&json).map_err(DbError::Unreadable)?;
            let c = Columns::of(&record);
            self.conn().execute(
                "UPDATE sessions SET state = ?2, owner = ?3, upload_key = ?4, expires_unix = ?5 WHERE id = ?1",
                params![id, c.state, c.owner, c.upload_key, c.expires_unix],
            )?;
        }
        Ok(())
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
        Self::insert_in(&self.conn(), record)
    }

    fn insert_in(conn: &Connection, record: &Record) -> Result<(), DbError> {
        let json = serde_json::to_string(record).map_err(DbError::Unreadable)?;
        let c = Columns::of(record);
        conn.execute(
            "INSERT INTO sessions (id, record, revision, state, owner, upload_key, expires_unix)
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
            params![record.session.id, json, c.state, c.owner, c.upload_key, c.expires_unix],
        )?;
        Ok(())
    }

    /// The session whose object is stored under `key`.
    pub fn session_with_key(&self, key: &str) -> Result<Option<Record>, DbError> {
        let id: Option<String> = self
            .conn()
            .query_row("SELECT id FROM sessions WHERE upload_key = ?1", [key], |row| row.get(0))
            .optional()?;
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// How many sessions `owner` has that may still take bytes.
    pub fn open_sessions_of(&self, owner: &str) -> Result<u64, DbError> {
        let count = self.conn().query_row(
            &format!("SELECT COUNT(*) FROM sessions WHERE owner = ?1 AND state IN ({OPEN_STATES})"),
            [owner],
            |row| row.get(0),
        )?;
        Ok(count)
    }

    /// Sessions still open whose time ran out before `now_unix`.
    pub fn open_sessions_expired_at(&self, now_unix: u64) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut query = conn.prepare(&format!(
            "SELECT id FROM sessions WHERE state IN ({OPEN_STATES}) AND expires_unix < ?1"
        ))?;
        let ids = query.query_map([now_unix], |row| row.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
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
        let mut conn = self.conn();
        let transaction = conn.transaction()?;
        Self::insert_in(&transaction, record)?;
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
        let c = Columns::of(record);
        let changed = self.conn().execute(
            "UPDATE sessions SET record = ?2, revision = revision + 1, state = ?4, expires_unix = ?5
             WHERE id = ?1 AND revision = ?3",
            params![record.session.id, json, record.revision, c.state, c.expires_unix],
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
            owner: Some("o1".into()),
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
