//! The session record, as Rindle's `MediaUploadSession` carries it, and the
//! one rule for changing its state: adopt what the server reports, checked
//! against the transition table.

use crate::error::{ErrorCode, UploadError};
use crate::secret::Secret;
use crate::state::SessionState;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStrategy {
    PresignedPut,
    Multipart,
    /// GCS resumable sessions, or tus when `resumable_protocol` is `tus`.
    Resumable,
}

impl UploadStrategy {
    pub const ALL: [UploadStrategy; 3] =
        [UploadStrategy::PresignedPut, UploadStrategy::Multipart, UploadStrategy::Resumable];

    /// The wire name, as the broker protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStrategy::PresignedPut => "presigned_put",
            UploadStrategy::Multipart => "multipart",
            UploadStrategy::Resumable => "resumable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartPart {
    pub part_number: u32,
    pub etag: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// The checksum the part was sent and stored with (`multipart/complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<crate::wire::checksum::Checksum>,
}

/// Every field of Rindle's session record; timestamps are the ISO 8601
/// strings the server sends, kept as given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    #[serde(default)]
    pub asset_id: Option<String>,
    pub state: SessionState,
    #[serde(default)]
    pub upload_key: Option<String>,
    pub upload_strategy: UploadStrategy,
    #[serde(default)]
    pub upload_length: Option<u64>,
    #[serde(default)]
    pub resumable_protocol: Option<String>,
    #[serde(default)]
    pub multipart_upload_id: Option<String>,
    #[serde(default)]
    pub multipart_parts: Vec<MultipartPart>,
    /// A bearer credential (GCS resumable session URI).
    #[serde(default)]
    pub session_uri: Option<Secret>,
    #[serde(default)]
    pub session_uri_expires_at: Option<String>,
    #[serde(default)]
    pub last_known_offset: Option<u64>,
    #[serde(default)]
    pub region_hint: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub verified_at: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub inserted_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl Session {
    /// Checks that a record received from a broker can be trusted as a
    /// session at all: ids are used in URL paths, so they must be plain.
    pub fn validate(&self) -> Result<(), UploadError> {
        if !is_plain_id(&self.id) {
            return Err(malformed("session id must be 1-128 characters of [A-Za-z0-9_-]"));
        }
        Ok(())
    }

    /// Moves this record to `to`, if the table allows it. Staying in the
    /// same state is not a transition and always succeeds.
    pub fn transition(&mut self, to: SessionState) -> Result<Option<SessionState>, UploadError> {
        let from = self.state;
        if from == to {
            return Ok(None);
        }
        if !from.can_transition_to(to) {
            return Err(UploadError::new(
                ErrorCode::IllegalTransition,
                format!("session {} cannot move from {from} to {to}", self.id),
            )
            .in_state(Some(from)));
        }
        self.state = to;
        Ok(Some(from))
    }

    /// Takes the server's record as the truth, provided its state is one
    /// this record may move to. Returns the previous state if it changed.
    ///
    /// A server that has not seen what the client saw first (resuming,
    /// bytes started or landed, verification asked for) reports a state
    /// this record already left by legal steps; its record is taken, the
    /// state kept.
    pub fn adopt(&mut self, server: Session) -> Result<Option<SessionState>, UploadError> {
        if server.id != self.id {
            return Err(malformed(format!(
                "broker answered for session {} while asking about {}",
                server.id, self.id
            ))
            .in_state(Some(self.state)));
        }
        let local = self.state;
        if local.is_client_observed() && server.state != local && server.state.can_reach(local) {
            *self = Session { state: local, ..server };
            return Ok(None);
        }
        let from = self.transition(server.state)?;
        *self = server;
        Ok(from)
    }
}

fn is_plain_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn malformed(message: impl Into<String>) -> UploadError {
    UploadError::new(ErrorCode::BrokerMalformedResponse, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "id": "3f1c9a2e-0000-4000-8000-000000000001",
        "asset_id": "a-1",
        "state": "uploading",
        "upload_key": "uploads/a-1/photo.jpg",
        "upload_strategy": "resumable",
        "upload_length": 1048576,
        "resumable_protocol": "tus",
        "multipart_upload_id": "mp-1",
        "multipart_parts": [{"part_number": 1, "etag": "\"e1\"", "size": 5242880}],
        "session_uri": "https://storage.example/upload?upload_id=SECRET",
        "session_uri_expires_at": "2026-11-27T00:00:00Z",
        "last_known_offset": 262144,
        "region_hint": "eu-west-1",
        "expires_at": "2026-11-27T00:00:00Z",
        "verified_at": null,
        "failure_reason": null,
        "inserted_at": "2026-11-26T00:00:00Z",
        "updated_at": "2026-11-26T00:01:00Z"
    }"#;

    fn session(state: SessionState) -> Session {
        Session {
            id: "s1".into(),
            asset_id: None,
            state,
            upload_key: None,
            upload_strategy: UploadStrategy::PresignedPut,
            upload_length: Some(10),
            resumable_protocol: None,
            multipart_upload_id: None,
            multipart_parts: vec![],
            session_uri: None,
            session_uri_expires_at: None,
            last_known_offset: None,
            region_hint: None,
            expires_at: None,
            verified_at: None,
            failure_reason: None,
            inserted_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn every_field_round_trips_through_snake_case_json() {
        let parsed: Session = serde_json::from_str(FULL).unwrap();
        assert_eq!(parsed.state, SessionState::Uploading);
        assert_eq!(parsed.upload_strategy, UploadStrategy::Resumable);
        assert_eq!(parsed.last_known_offset, Some(262144));
        assert_eq!(parsed.multipart_parts[0].etag, "\"e1\"");
        let back: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        let original: serde_json::Value = serde_json::from_str(FULL).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn debug_output_redacts_the_session_uri() {
        let parsed: Session = serde_json::from_str(FULL).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("https://storage.example/[redacted]"));
    }

    #[test]
    fn minimal_records_take_defaults_and_bad_ones_are_refused() {
        let minimal: Session =
            serde_json::from_str(r#"{"id":"s1","state":"initialized","upload_strategy":"presigned_put"}"#)
                .unwrap();
        assert_eq!(minimal.multipart_parts, vec![]);
        for bad in [
            r#"{"id":"s1","state":"paused","upload_strategy":"presigned_put"}"#,
            r#"{"id":"s1","state":"signed","upload_strategy":"carrier_pigeon"}"#,
            r#"{"id":"s1","state":"signed"}"#,
            r#"{"id":"s1","state":"signed","upload_strategy":"presigned_put","upload_length":-1}"#,
            r#"{"id":7,"state":"signed","upload_strategy":"presigned_put"}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Session>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_that_could_escape_a_url_path_are_refused() {
        for id in ["", "../admin", "a/b", "a?b", "a b", &"x".repeat(129)] {
            let mut s = session(SessionState::Signed);
            s.id = id.to_owned();
            assert_eq!(s.validate().unwrap_err().code, ErrorCode::BrokerMalformedResponse, "{id:?}");
        }
        assert!(session(SessionState::Signed).validate().is_ok());
    }

    #[test]
    fn adopting_follows_the_table() {
        let mut local = session(SessionState::Initialized);
        assert_eq!(local.adopt(session(SessionState::Signed)).unwrap(), Some(SessionState::Initialized));
        assert_eq!(local.adopt(session(SessionState::Signed)).unwrap(), None);
        let err = local.adopt(session(SessionState::Completed)).unwrap_err();
        assert_eq!(err.code, ErrorCode::IllegalTransition);
        assert_eq!(err.state, Some(SessionState::Signed));
        assert_eq!(local.state, SessionState::Signed, "an illegal transition is never applied");
    }

    #[test]
    fn a_server_behind_the_client_updates_the_record_but_not_the_state() {
        let mut local = session(SessionState::Uploading);
        let mut server = session(SessionState::Signed);
        server.last_known_offset = Some(5);
        assert_eq!(local.adopt(server).unwrap(), None);
        assert_eq!((local.state, local.last_known_offset), (SessionState::Uploading, Some(5)));
        // Behind is only what the table can reach: a terminal local state is
        // never reopened, and a server cannot jump ahead illegally.
        let mut done = session(SessionState::Completed);
        assert_eq!(done.adopt(session(SessionState::Signed)).unwrap_err().code, ErrorCode::IllegalTransition);
    }

    #[test]
    fn adopting_another_sessions_record_is_refused() {
        let mut local = session(SessionState::Signed);
        let mut other = session(SessionState::Uploading);
        other.id = "s2".into();
        assert_eq!(local.adopt(other).unwrap_err().code, ErrorCode::BrokerMalformedResponse);
        assert_eq!(local.id, "s1");
    }
}
