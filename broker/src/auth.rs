//! Who calls the protocol's routes, and the binding of sessions to them:
//! an anonymous owner cookie (the default, for the demo) or a bearer token
//! from configuration (for deployments). See docs/security.md.

use crate::config::{AuthMode, Config};
use crate::service::{AppState, Caller, ServiceError};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rindle_upload::ErrorCode;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The owner cookie: 32 random bytes, hex. HttpOnly, so page code never
/// reads it; any broker accepts any well-formed one (brokers on one host
/// share a browser's cookie jar, whatever their port).
pub const OWNER_COOKIE: &str = "rindle_owner";

/// What a request proves, and the cookie to set when it brought none.
struct Identified {
    caller: Caller,
    set_cookie: Option<HeaderValue>,
}

fn digest(kind: &str, credential: &str) -> Caller {
    Caller(hex::encode(Sha256::digest(format!("{kind}:{credential}"))))
}

fn owner_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == OWNER_COOKIE)
        .map(|(_, value)| value)
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn identify(config: &Config, headers: &HeaderMap) -> Result<Identified, ServiceError> {
    match &config.auth {
        AuthMode::Cookie => {
            if let Some(token) = owner_cookie(headers) {
                return Ok(Identified { caller: digest("owner", token), set_cookie: None });
            }
            let mut token = [0u8; 32];
            getrandom::fill(&mut token).map_err(|_| {
                ServiceError::new(500, ErrorCode::Internal, "no randomness for an owner cookie")
            })?;
            let token = hex::encode(token);
            let secure = if config.public_url.as_deref().is_some_and(|u| u.starts_with("https:")) {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{OWNER_COOKIE}={token}; Path={}; HttpOnly; SameSite=Lax; Max-Age=31536000{secure}",
                crate::routes::API_BASE
            );
            Ok(Identified {
                caller: digest("owner", &token),
                set_cookie: HeaderValue::from_str(&cookie).ok(),
            })
        }
        AuthMode::Bearer(tokens) => {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim);
            // Digests are compared, so the time taken says nothing of a token.
            let known = presented
                .map(|p| digest("bearer", p))
                .filter(|presented| tokens.iter().any(|token| digest("bearer", token) == *presented));
            known.map(|caller| Identified { caller, set_cookie: None }).ok_or_else(|| {
                ServiceError::new(401, ErrorCode::Unauthorized, "a valid bearer token is required")
            })
        }
    }
}

/// Middleware of the protocol's routes: identifies the caller (refusing an
/// unknown bearer token with 401), hands it to the handler as an
/// extension, and sets the owner cookie on the answer when it was new.
pub async fn identify_caller(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let identified = match identify(&state.config, request.headers()) {
        Ok(identified) => identified,
        Err(refused) => return refused.into_response(),
    };
    request.extensions_mut().insert(identified.caller);
    let mut response = next.run(request).await;
    if let Some(cookie) = identified.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_cookie_is_read_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        let token = "ab".repeat(32);
        headers
            .insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {OWNER_COOKIE}={token}")).unwrap());
        assert_eq!(owner_cookie(&headers), Some(token.as_str()));
        headers.insert(header::COOKIE, HeaderValue::from_static("rindle_owner=short"));
        assert_eq!(owner_cookie(&headers), None);
    }
}
