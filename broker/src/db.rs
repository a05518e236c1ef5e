//! Session records in an embedded SQLite database, so a restart loses
//! nothing.

use rindle_upload::broker::Asset;
use rindle_upload::Session;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

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
}

pub struct Db(Mutex<Connection>);

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL);",
        )?;
        Ok(Db(Mutex::new(conn)))
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Record>> {
        let conn = self.0.lock().expect("db lock");
        let json: Option<String> =
            conn.query_row("SELECT record FROM sessions WHERE id = ?1", [id], |row| row.get(0)).optional()?;
        Ok(json.map(|json| serde_json::from_str(&json).expect("records are written by this program")))
    }

    pub fn put(&self, record: &Record) -> rusqlite::Result<()> {
        let json = serde_json::to_string(record).expect("records serialize");
        let conn = self.0.lock().expect("db lock");
        conn.execute(
            "INSERT INTO sessions (id, record) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET record = excluded.record",
            params![record.session.id, json],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let path = std::env::temp_dir().join(format!("rindle-db-{}.sqlite", uuid::Uuid::new_v4()));
        let session: Session =
            serde_json::from_str(r#"{"id":"s1","state":"signed","upload_strategy":"presigned_put"}"#)
                .unwrap();
        let record = Record {
            session,
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            part_size: None,
            asset: None,
        };
        Db::open(&path).unwrap().put(&record).unwrap();
        let reopened = Db::open(&path).unwrap();
        let back = reopened.get("s1").unwrap().unwrap();
        assert_eq!(back.session, record.session);
        assert_eq!(back.filename, "a.txt");
        assert!(reopened.get("s2").unwrap().is_none());
    }
}
