//! The broker protocol's bodies as JSON, field by field: replies and error
//! bodies read, request bodies and the records shown to JavaScript
//! written. The browser works on JS values this way (`web`), so no serde
//! visitors, serializers or float formatting ship in the WebAssembly. The
//! reference broker and native tests use serde; a test checks that both
//! read and write the same JSON.

use crate::broker::{Asset, BrokerCall, BrokerReply, SignedPart, SignedRequest};
use crate::error::{ErrorBody, ErrorDetail};
use crate::options::exact_whole;
use crate::secret::Secret;
use crate::session::{MultipartPart, Session, UploadStrategy};
use crate::state::SessionState;
use crate::wire::checksum::{Checksum, ChecksumAlgorithm};
use std::fmt;

/// A decoded JSON value (a JS value in the browser).
pub trait Json: Sized {
    /// The member `key` of an object; `None` when absent or null.
    fn member(&self, key: &str) -> Option<Self>;
    fn is_object(&self) -> bool;
    fn string(&self) -> Option<String>;
    fn number(&self) -> Option<f64>;
    fn boolean(&self) -> Option<bool>;
    /// An array's items; `None` for anything else.
    fn items(&self) -> Option<Vec<Self>>;
    /// An object's members; `None` for anything else.
    fn members(&self) -> Option<Vec<(String, Self)>>;
}

/// A reply that is not in the protocol's shape: which field, and what it
/// must be.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed {
    pub field: String,
    pub expected: &'static str,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&["`", &self.field, "` must be ", self.expected].concat())
    }
}

type Read<T> = Result<T, Malformed>;

pub fn broker_reply(value: &impl Json) -> Read<BrokerReply> {
    let reply = Object::of(value, "reply")?;
    Ok(BrokerReply {
        session: reply.required("session", session)?,
        upload: reply.optional("upload", signed_request)?,
        parts: reply.list("parts", signed_part)?,
        asset: reply.optional("asset", asset)?,
        part_size: reply.optional("part_size", whole)?,
    })
}

pub fn error_body(value: &impl Json) -> Read<ErrorBody> {
    let body = Object::of(value, "body")?;
    let detail = |value: &_, at: &str| {
        let error = Object::of(value, at)?;
        Ok(ErrorDetail {
            code: error.required("code", string)?,
            message: error.required("message", string)?,
            retryable: error.optional("retryable", boolean)?.unwrap_or(false),
        })
    };
    Ok(ErrorBody { error: body.required("error", detail)? })
}

fn session<J: Json>(value: &J, at: &str) -> Read<Session> {
    let session = Object::of(value, at)?;
    Ok(Session {
        id: session.required("id", string)?,
        asset_id: session.optional("asset_id", string)?,
        state: session.required("state", state)?,
        upload_key: session.optional("upload_key", string)?,
        upload_strategy: session.required("upload_strategy", strategy)?,
        upload_length: session.optional("upload_length", whole)?,
        resumable_protocol: session.optional("resumable_protocol", string)?,
        multipart_upload_id: session.optional("multipart_upload_id", string)?,
        multipart_parts: session.list("multipart_parts", multipart_part)?,
        session_uri: session.optional("session_uri", string)?.map(Secret::new),
        session_uri_expires_at: session.optional("session_uri_expires_at", string)?,
        last_known_offset: session.optional("last_known_offset", whole)?,
        region_hint: session.optional("region_hint", string)?,
        expires_at: session.optional("expires_at", string)?,
        verified_at: session.optional("verified_at", string)?,
        failure_reason: session.optional("failure_reason", string)?,
        inserted_at: session.optional("inserted_at", string)?,
        updated_at: session.optional("updated_at", string)?,
    })
}

fn multipart_part<J: Json>(value: &J, at: &str) -> Read<MultipartPart> {
    let part = Object::of(value, at)?;
    Ok(MultipartPart {
        part_number: part.required("part_number", part_number)?,
        etag: part.required("etag", string)?,
        size: part.optional("size", whole)?,
        checksum: part.optional("checksum", checksum)?,
    })
}

fn signed_request<J: Json>(value: &J, at: &str) -> Read<SignedRequest> {
    let signed = Object::of(value, at)?;
    let headers = |value: &J, at: &str| {
        let members = value.members().ok_or_else(|| expected(at, "an object of strings"))?;
        members.into_iter().map(|(name, value)| Ok((name, string(&value, at)?))).collect()
    };
    Ok(SignedRequest {
        method: signed.required("method", string)?,
        url: Secret::new(signed.required("url", string)?),
        headers: signed.optional("headers", headers)?.unwrap_or_default(),
        expires_at: signed.optional("expires_at", string)?,
        expires_in: signed.optional("expires_in", whole)?,
    })
}

fn signed_part<J: Json>(value: &J, at: &str) -> Read<SignedPart> {
    let part = Object::of(value, at)?;
    Ok(SignedPart {
        part_number: part.required("part_number", part_number)?,
        upload: part.required("upload", signed_request)?,
    })
}

fn asset<J: Json>(value: &J, at: &str) -> Read<Asset> {
    let asset = Object::of(value, at)?;
    Ok(Asset {
        id: asset.required("id", string)?,
        key: asset.required("key", string)?,
        byte_size: asset.required("byte_size", whole)?,
        content_type: asset.required("content_type", string)?,
        sha256: asset.optional("sha256", string)?,
        url: asset.required("url", string)?,
    })
}

fn checksum<J: Json>(value: &J, at: &str) -> Read<Checksum> {
    let checksum = Object::of(value, at)?;
    let algorithm = |value: &J, at: &str| {
        value
            .string()
            .and_then(|name| ChecksumAlgorithm::named(&name))
            .ok_or_else(|| expected(at, "an algorithm"))
    };
    Ok(Checksum {
        algorithm: checksum.required("algorithm", algorithm)?,
        value: checksum.required("value", string)?,
    })
}

fn string(value: &impl Json, at: &str) -> Read<String> {
    value.string().ok_or_else(|| expected(at, "a string"))
}

fn boolean(value: &impl Json, at: &str) -> Read<bool> {
    value.boolean().ok_or_else(|| expected(at, "true or false"))
}

fn whole(value: &impl Json, at: &str) -> Read<u64> {
    value.number().and_then(exact_whole).ok_or_else(|| expected(at, "a whole number"))
}

fn part_number(value: &impl Json, at: &str) -> Read<u32> {
    whole(value, at).and_then(|n| u32::try_from(n).map_err(|_| expected(at, "a part number")))
}

fn state(value: &impl Json, at: &str) -> Read<SessionState> {
    let name = value.string();
    SessionState::ALL
        .into_iter()
        .find(|s| Some(s.as_str()) == name.as_deref())
        .ok_or_else(|| expected(at, "a session state"))
}

fn strategy(value: &impl Json, at: &str) -> Read<UploadStrategy> {
    let name = value.string();
    UploadStrategy::ALL
        .into_iter()
        .find(|s| Some(s.as_str()) == name.as_deref())
        .ok_or_else(|| expected(at, "presigned_put, multipart or resumable"))
}

fn expected(at: &str, expected: &'static str) -> Malformed {
    Malformed { field: at.to_owned(), expected }
}

/// Builds a JSON value (a JS value in the browser).
pub trait JsonBuilder: Sized {
    fn null() -> Self;
    fn string(value: &str) -> Self;
    fn number(value: u64) -> Self;
    fn list(items: Vec<Self>) -> Self;
    fn object(members: Vec<(&str, Self)>) -> Self;
}

/// A request's body, as `BrokerCall::serialize_body` writes it.
pub fn call_body<J: JsonBuilder>(call: &BrokerCall) -> J {
    let mut members = Vec::new();
    let mut checksum_keys = Vec::new();
    let mut checksums = Vec::new();
    match call {
        BrokerCall::Initiate(request) => {
            members.push(("filename", J::string(&request.filename)));
            members.push(("content_type", J::string(&request.content_type)));
            members.push(("byte_size", J::number(request.byte_size)));
            members.push(("upload_strategy", J::string(request.upload_strategy.as_str())));
            if let Some(protocol) = &request.resumable_protocol {
                members.push(("resumable_protocol", J::string(protocol)));
            }
            if let Some(size) = request.part_size {
                members.push(("part_size", J::number(size)));
            }
            if let Some(algorithm) = request.checksum_algorithm {
                members.push(("checksum_algorithm", J::string(algorithm.name())));
            }
            if let Some(key) = &request.idempotency_key {
                members.push(("idempotency_key", J::string(key)));
            }
            return J::object(members);
        }
        BrokerCall::Sign { checksum: Some(checksum), .. }
        | BrokerCall::Complete { checksum: Some(checksum), .. } => {
            members.push(("checksum", checksum_json(checksum)));
        }
        BrokerCall::SignParts { part_numbers, checksums: by_part, .. } => {
            members
                .push(("part_numbers", J::list(part_numbers.iter().map(|&n| J::number(n.into())).collect())));
            checksum_keys = by_part.iter().map(|(part, _)| part.to_string()).collect();
            checksums = by_part.iter().map(|(_, checksum)| checksum_json(checksum)).collect();
        }
        BrokerCall::CompleteMultipart { parts, checksum, .. } => {
            members.push(("parts", J::list(parts.iter().map(part_json).collect())));
            if let Some(checksum) = checksum {
                members.push(("checksum", checksum_json(checksum)));
            }
        }
        BrokerCall::ResumableStatus { offset, session_uri, .. } => {
            members.push(("offset", J::number(*offset)));
            if let Some(uri) = session_uri {
                members.push(("session_uri", J::string(uri.expose())));
            }
        }
        _ => {}
    }
    members.push(("session_id", J::string(call.session_id().unwrap_or_default())));
    if !checksums.is_empty() {
        members.push((
            "checksums",
            J::object(checksum_keys.iter().map(String::as_str).zip(checksums).collect()),
        ));
    }
    J::object(members)
}

/// Every field of a session record, absent ones as null.
pub fn session_json<J: JsonBuilder>(session: &Session) -> J {
    let text = |value: &Option<String>| value.as_deref().map_or_else(J::null, J::string);
    let count = |value: Option<u64>| value.map_or_else(J::null, J::number);
    J::object(vec![
        ("id", J::string(&session.id)),
        ("asset_id", text(&session.asset_id)),
        ("state", J::string(session.state.as_str())),
        ("upload_key", text(&session.upload_key)),
        ("upload_strategy", J::string(session.upload_strategy.as_str())),
        ("upload_length", count(session.upload_length)),
        ("resumable_protocol", text(&session.resumable_protocol)),
        ("multipart_upload_id", text(&session.multipart_upload_id)),
        ("multipart_parts", J::list(session.multipart_parts.iter().map(part_json).collect())),
        ("session_uri", session.session_uri.as_ref().map_or_else(J::null, |uri| J::string(uri.expose()))),
        ("session_uri_expires_at", text(&session.session_uri_expires_at)),
        ("last_known_offset", count(session.last_known_offset)),
        ("region_hint", text(&session.region_hint)),
        ("expires_at", text(&session.expires_at)),
        ("verified_at", text(&session.verified_at)),
        ("failure_reason", text(&session.failure_reason)),
        ("inserted_at", text(&session.inserted_at)),
        ("updated_at", text(&session.updated_at)),
    ])
}

pub fn asset_json<J: JsonBuilder>(asset: &Asset) -> J {
    J::object(vec![
        ("id", J::string(&asset.id)),
        ("key", J::string(&asset.key)),
        ("byte_size", J::number(asset.byte_size)),
        ("content_type", J::string(&asset.content_type)),
        ("sha256", asset.sha256.as_deref().map_or_else(J::null, J::string)),
        ("url", J::string(&asset.url)),
    ])
}

fn part_json<J: JsonBuilder>(part: &MultipartPart) -> J {
    let mut members = vec![
        ("part_number", J::number(part.part_number.into())),
        ("etag", J::string(&part.etag)),
        ("size", part.size.map_or_else(J::null, J::number)),
    ];
    if let Some(checksum) = &part.checksum {
        members.push(("checksum", checksum_json(checksum)));
    }
    J::object(members)
}

fn checksum_json<J: JsonBuilder>(checksum: &Checksum) -> J {
    J::object(vec![
        ("algorithm", J::string(checksum.algorithm.name())),
        ("value", J::string(&checksum.value)),
    ])
}

/// An object being read, and where it is in the reply (for messages).
struct Object<'a, J> {
    value: &'a J,
    at: &'a str,
}

impl<'a, J: Json> Object<'a, J> {
    fn of(value: &'a J, at: &'a str) -> Read<Self> {
        if value.is_object() {
            Ok(Object { value, at })
        } else {
            Err(expected(at, "an object"))
        }
    }

    fn path(&self, key: &str) -> String {
        [self.at, ".", key].concat()
    }

    fn optional<T>(&self, key: &str, read: fn(&J, &str) -> Read<T>) -> Read<Option<T>> {
        self.value.member(key).map(|member| read(&member, &self.path(key))).transpose()
    }

    fn required<T>(&self, key: &str, read: fn(&J, &str) -> Read<T>) -> Read<T> {
        self.optional(key, read)?.ok_or_else(|| Malformed { field: self.path(key), expected: "given" })
    }

    /// A list; absent or null is empty.
    fn list<T>(&self, key: &str, read: fn(&J, &str) -> Read<T>) -> Read<Vec<T>> {
        let Some(member) = self.value.member(key) else { return Ok(Vec::new()) };
        let at = self.path(key);
        let items = member.items().ok_or_else(|| expected(&at, "a list"))?;
        items.iter().map(|item| read(item, &at)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    impl Json for Value {
        fn member(&self, key: &str) -> Option<Self> {
            self.get(key).filter(|v| !v.is_null()).cloned()
        }
        fn is_object(&self) -> bool {
            self.is_object()
        }
        fn string(&self) -> Option<String> {
            self.as_str().map(str::to_owned)
        }
        fn number(&self) -> Option<f64> {
            self.as_f64()
        }
        fn boolean(&self) -> Option<bool> {
            self.as_bool()
        }
        fn items(&self) -> Option<Vec<Self>> {
            self.as_array().cloned()
        }
        fn members(&self) -> Option<Vec<(String, Self)>> {
            self.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
    }

    impl JsonBuilder for Value {
        fn null() -> Self {
            Value::Null
        }
        fn string(value: &str) -> Self {
            value.into()
        }
        fn number(value: u64) -> Self {
            value.into()
        }
        fn list(items: Vec<Self>) -> Self {
            Value::Array(items)
        }
        fn object(members: Vec<(&str, Self)>) -> Self {
            Value::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }
    }

    fn full_reply() -> Value {
        json!({
            "session": {
                "id": "s1", "asset_id": "a1", "state": "uploading", "upload_key": "k",
                "upload_strategy": "multipart", "upload_length": 10, "resumable_protocol": null,
                "multipart_upload_id": "u1",
                "multipart_parts": [{"part_number": 1, "etag": "\"e1\"", "size": 5,
                                     "checksum": {"algorithm": "crc32c", "value": "AAAAAA=="}}],
                "session_uri": "https://store.test/s?sig=SECRET", "session_uri_expires_at": "2026-12-01T00:00:00Z",
                "last_known_offset": 0, "region_hint": "eu", "expires_at": "2026-12-02T00:00:00Z",
                "verified_at": null, "failure_reason": null, "inserted_at": "2026-12-01T00:00:00",
                "updated_at": "2026-12-01T00:00:01", "unknown": [1, 2]
            },
            "upload": {"method": "PUT", "url": "https://store.test/k?sig=SECRET",
                       "headers": {"Content-Type": "text/plain"}, "expires_at": "x", "expires_in": 900},
            "parts": [{"part_number": 2, "upload": {"method": "PUT", "url": "https://store.test/p2"}}],
            "asset": {"id": "a1", "key": "k", "byte_size": 10, "content_type": "text/plain",
                      "sha256": null, "url": "/objects/k"},
            "part_size": 8388608
        })
    }

    #[test]
    fn reads_every_field_as_serde_does() {
        for body in
            [full_reply(), json!({"session": {"id": "s", "state": "signed", "upload_strategy": "resumable"}})]
        {
            let by_serde: BrokerReply = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(broker_reply(&body).unwrap(), by_serde);
        }
        let error = json!({"error": {"code": "not_found", "message": "no such session"}});
        assert_eq!(error_body(&error).unwrap(), serde_json::from_value::<ErrorBody>(error.clone()).unwrap());
    }

    #[test]
    fn writes_bodies_and_records_as_serde_does() {
        use crate::broker::InitiateRequest;
        let reply = broker_reply(&full_reply()).unwrap();
        assert_eq!(session_json::<Value>(&reply.session), serde_json::to_value(&reply.session).unwrap());
        let asset = reply.asset.unwrap();
        assert_eq!(asset_json::<Value>(&asset), serde_json::to_value(&asset).unwrap());

        let session_id = || "s1".to_owned();
        let checksum = Checksum { algorithm: ChecksumAlgorithm::Crc32c, value: "AAAAAA==".into() };
        let part = |checksum| MultipartPart { part_number: 1, etag: "\"e\"".into(), size: Some(5), checksum };
        let initiate = |part_size, idempotency_key: Option<&str>| InitiateRequest {
            filename: "a.bin".into(),
            content_type: "application/octet-stream".into(),
            byte_size: 10,
            upload_strategy: UploadStrategy::Multipart,
            resumable_protocol: None,
            part_size,
            checksum_algorithm: part_size.map(|_| ChecksumAlgorithm::Crc32c),
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        let calls = [
            BrokerCall::Initiate(initiate(Some(5 << 20), Some("k"))),
            BrokerCall::Initiate(initiate(None, None)),
            BrokerCall::Show { session_id: session_id() },
            BrokerCall::Sign { session_id: session_id(), checksum: Some(checksum.clone()) },
            BrokerCall::Sign { session_id: session_id(), checksum: None },
            BrokerCall::SignParts {
                session_id: session_id(),
                part_numbers: vec![1, 2],
                checksums: vec![(1, checksum.clone()), (10, checksum.clone())],
            },
            BrokerCall::SignParts { session_id: session_id(), part_numbers: vec![3], checksums: vec![] },
            BrokerCall::ListParts { session_id: session_id() },
            BrokerCall::Complete { session_id: session_id(), checksum: Some(checksum.clone()) },
            BrokerCall::ResumableStatus {
                session_id: session_id(),
                offset: 7,
                session_uri: Some(Secret::new("https://t/u")),
            },
            BrokerCall::ResumableStatus { session_id: session_id(), offset: 0, session_uri: None },
            BrokerCall::CompleteMultipart {
                session_id: session_id(),
                parts: vec![part(Some(checksum.clone())), part(None)],
                checksum: Some(checksum.clone()),
            },
            BrokerCall::Cancel { session_id: session_id() },
        ];
        for call in calls {
            assert_eq!(
                call_body::<Value>(&call),
                call.serialize_body(serde_json::value::Serializer).unwrap(),
                "{}",
                call.name()
            );
        }
    }

    #[test]
    fn a_wrong_field_is_named_with_what_it_must_be() {
        let with = |pointer: &str, value: Value| {
            let mut body = full_reply();
            *body.pointer_mut(pointer).unwrap() = value;
            broker_reply(&body).unwrap_err().to_string()
        };
        assert_eq!(with("/session/state", json!("paused")), "`reply.session.state` must be a session state");
        assert_eq!(with("/session/id", Value::Null), "`reply.session.id` must be given");
        assert_eq!(with("/upload/expires_in", json!(-5)), "`reply.upload.expires_in` must be a whole number");
        assert_eq!(
            with("/upload/expires_in", json!(1.5)),
            "`reply.upload.expires_in` must be a whole number"
        );
        assert_eq!(
            with("/session/multipart_parts", json!({})),
            "`reply.session.multipart_parts` must be a list"
        );
        assert_eq!(
            with("/parts/0/part_number", json!(4_294_967_296u64)),
            "`reply.parts.part_number` must be a part number"
        );
        assert_eq!(with("/upload/headers", json!({"a": 1})), "`reply.upload.headers` must be a string");
        assert_eq!(broker_reply(&json!([])).unwrap_err().to_string(), "`reply` must be an object");
    }
}
