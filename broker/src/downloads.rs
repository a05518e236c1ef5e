//! `GET /objects/{key}`: a verified object, on the broker's own origin, in
//! a way no upload can turn into active content there. Only completed
//! sessions' objects are served, with the type verification accepted,
//! `nosniff`, a CSP that runs nothing, and as an attachment unless the type
//! is safe to show inline.

use crate::service::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rindle_upload::SessionState;
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// `inline` only for types a browser shows without running anything:
/// raster images, audio, video, plain text. Everything else (HTML, SVG,
/// XML, JavaScript, PDF, unknown) downloads.
pub fn disposition(content_type: &str) -> &'static str {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let inline = match essence.split_once('/') {
        Some(("image", subtype)) => !subtype.contains("svg") && !subtype.contains("xml"),
        Some(("audio" | "video", _)) => true,
        _ => essence == "text/plain",
    };
    if inline {
        "inline"
    } else {
        "attachment"
    }
}

/// The headers every download answer carries.
fn harden(headers: &mut HeaderMap, content_type: &str, filename: &str) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    // Keys keep only [A-Za-z0-9._-] of a file name: safe inside quotes.
    let value = format!("{}; filename=\"{filename}\"", disposition(content_type));
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
}

fn not_found() -> Response {
    let mut response = StatusCode::NOT_FOUND.into_response();
    harden(response.headers_mut(), "text/plain", "missing");
    response
}

pub async fn download(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    let record = match state.db.session_with_key(&key) {
        Ok(Some(record)) if record.session.state == SessionState::Completed => record,
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::error!("database: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let Some(asset) = &record.asset else { return not_found() };
    let filename = key.rsplit('/').next().unwrap_or("file").to_owned();
    let remote = state.remote_tus.as_ref().filter(|_| crate::service::is_tus(&record.session));
    let mut response = match (remote, &record.session.session_uri, state.store.local()) {
        (Some(remote), Some(uri), _) => match remote.download(uri.expose()).await {
            Ok(answer) => Body::from_stream(answer.bytes_stream()).into_response(),
            Err(e) => {
                tracing::warn!(session = %record.session.id, "download from the tus server: {e}");
                StatusCode::BAD_GATEWAY.into_response()
            }
        },
        (None, _, Some(local)) => match local.object_path(&key) {
            Some(path) => match ServeFile::new(path).oneshot(request).await {
                Ok(served) => served.map(Body::new),
                Err(never) => match never {},
            },
            None => return not_found(),
        },
        _ => return not_found(),
    };
    if response.status().is_success() || response.status() == StatusCode::PARTIAL_CONTENT {
        harden(response.headers_mut(), &asset.content_type, &filename);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passive_types_are_inline() {
        for inline in
            ["image/png", "image/jpeg", "video/mp4", "audio/ogg", "text/plain; charset=utf-8", "IMAGE/PNG"]
        {
            assert_eq!(disposition(inline), "inline", "{inline}");
        }
        for attachment in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "application/pdf",
            "application/octet-stream",
            "",
        ] {
            assert_eq!(disposition(attachment), "attachment", "{attachment}");
        }
    }
}
