//! The broker's HTTP face: the protocol's routes as thin axum handlers over
//! the session service, CORS (tus discovery is a plain OPTIONS request, not
//! a preflight), the embedded store's router when that store is in use, and
//! the static files (demo page, built package, verified objects).

use crate::auth::identify_caller;
use crate::config::{matches_any, Config};
use crate::service::{self, AppState, Caller, Outcome, ServiceError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rindle_upload::broker::{BrokerReply, InitiateRequest};
use rindle_upload::wire::routes;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower::Service;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

/// Response headers browsers may read: ETags of parts, GCS's Range, tus's
/// offsets and discovery headers.
fn exposed_headers() -> [HeaderName; 12] {
    [
        header::ETAG,
        header::CONTENT_LENGTH,
        header::RANGE,
        header::LOCATION,
        HeaderName::from_static("upload-offset"),
        HeaderName::from_static("upload-length"),
        HeaderName::from_static("upload-expires"),
        HeaderName::from_static("tus-resumable"),
        HeaderName::from_static("tus-version"),
        HeaderName::from_static("tus-extension"),
        HeaderName::from_static("tus-max-size"),
        HeaderName::from_static("tus-checksum-algorithm"),
    ]
}

/// The CORS policy (docs/security.md): with no `ALLOWED_ORIGINS`, any
/// origin, without credentials (cookies are not sent, so cross-origin
/// pages use bearer tokens); with them, those origins, with credentials.
/// Request headers are mirrored, so `Authorization` and an app's own
/// headers pass.
fn cors(config: &Config) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(exposed_headers())
        .max_age(Duration::from_secs(600));
    if config.allowed_origins.is_empty() {
        return layer.allow_origin(Any);
    }
    let allowed = config.allowed_origins.clone();
    layer
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|origin| matches_any(&allowed, origin))
        }))
        .allow_credentials(true)
}

/// The Access-Control-Allow-Origin a plain (non-preflight) OPTIONS answer
/// carries, by the same policy.
fn allowed_origin(config: &Config, headers: &HeaderMap) -> Option<HeaderValue> {
    if config.allowed_origins.is_empty() {
        return Some(HeaderValue::from_static("*"));
    }
    let origin = headers.get(header::ORIGIN)?;
    matches_any(&config.allowed_origins, origin.to_str().ok()?).then(|| origin.clone())
}

pub fn router(state: Arc<AppState>) -> Router {
    let cors = cors(&state.config);
    let routes = routes(Arc::clone(&state));
    let with_cors = routes.clone().layer(cors);
    // tower-http's CorsLayer answers every OPTIONS request as a preflight,
    // but tus discovery is a plain OPTIONS request: those go to the routes,
    // with the headers a cross-origin page needs to read the answer.
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        let preflight = request.method() != axum::http::Method::OPTIONS
            || request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let (mut with_cors, mut routes) = (with_cors.clone(), routes.clone());
        let origin = allowed_origin(&state.config, request.headers());
        async move {
            if preflight {
                return with_cors.call(request).await;
            }
            let mut response = routes.call(request).await?;
            let headers = response.headers_mut();
            if let Some(origin) = origin {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            }
            let exposed = exposed_headers().map(|h| h.to_string()).join(", ");
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_str(&exposed).expect("names"),
            );
            Ok(response)
        }
    }))
}

/// The broker protocol's endpoint on this server.
pub const API_BASE: &str = "/api/uploads";

fn api(route: &str) -> String {
    format!("{API_BASE}{route}")
}

fn routes(state: Arc<AppState>) -> Router {
    let timeout =
        TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.config.limits.request_timeout);
    let calls = Router::new()
        .route(&api(routes::INITIATE), post(initiate))
        .route(&api(routes::SHOW), get(show))
        .route(&api(routes::SIGN), post(sign))
        .route(&api(routes::SIGN_PARTS), post(sign_parts))
        .route(&api(routes::LIST_PARTS), post(list_parts))
        .route(&api(routes::RESUMABLE_STATUS), post(resumable_status))
        .route(&api(routes::CANCEL), post(cancel))
        .layer(timeout);
    // Verification reads the object back, which takes as long as the
    // object is large: no request timeout.
    let verifying = Router::new()
        .route(&api(routes::COMPLETE), post(complete))
        .route(&api(routes::COMPLETE_MULTIPART), post(complete_multipart));
    let mut router = calls
        .merge(verifying)
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), identify_caller))
        .route("/objects/{*key}", get(crate::downloads::download));
    if state.store.local().is_some() {
        router = router.merge(crate::embedded::router());
    }
    router
        .nest_service("/pkg", ServeDir::new(&state.config.pkg_dir))
        .fallback_service(ServeDir::new(&state.config.www_dir))
        .with_state(state)
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body)).into_response()
    }
}

type ApiResult = Result<(StatusCode, Json<BrokerReply>), ServiceError>;

fn ok(outcome: Outcome) -> ApiResult {
    outcome.map(|reply| (StatusCode::OK, Json(reply)))
}

/// A JSON body, refused with the protocol's error body when malformed.
fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, ServiceError> {
    body.map(|Json(value)| value).map_err(|e| ServiceError::invalid(e.body_text()))
}

/// The calling page's origin, when CORS lets it call: its `Origin` header,
/// if it is an origin (`scheme://host[:port]`) the policy allows.
fn page_origin(config: &Config, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let parsed = url::Url::parse(origin).ok()?;
    let is_origin =
        matches!(parsed.scheme(), "http" | "https") && parsed.origin().ascii_serialization() == origin;
    let allowed = config.allowed_origins.is_empty() || matches_any(&config.allowed_origins, origin);
    (is_origin && allowed).then(|| origin.to_owned())
}

/// A JSON body that may be absent (older clients send none, or `{}`).
fn optional_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ServiceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ServiceError::invalid(format!("the body is not valid: {e}")))
}

/// Where this broker is reached from, for absolute URLs in replies:
/// `PUBLIC_URL`, or the Host header when it is one of the allowed hosts
/// (never any other).
pub fn base_url(config: &Config, headers: &HeaderMap) -> Result<String, ServiceError> {
    if let Some(url) = &config.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !matches_any(&config.allowed_hosts, host) {
        return Err(ServiceError::invalid("this broker does not answer for that Host"));
    }
    Ok(format!("http://{host}"))
}

/// The client's address, when the server knows it (not in tests).
pub struct ClientAddr(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let known = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(ClientAddr(known.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}

type AppHandle = State<Arc<AppState>>;
type CallerOf = Extension<Caller>;

async fn initiate(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    ClientAddr(client): ClientAddr,
    request: Result<Json<InitiateRequest>, JsonRejection>,
) -> ApiResult {
    let reply = service::initiate(&state, &caller, client, body(request)?).await?;
    Ok((StatusCode::CREATED, Json(reply)))
}

async fn show(State(state): AppHandle, Extension(caller): CallerOf, Path(id): Path<String>) -> ApiResult {
    ok(service::show(&state, &id, &caller))
}

async fn sign(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: axum::body::Bytes,
) -> ApiResult {
    let base = base_url(&state.config, &headers)?;
    let body = service::SignBody { origin: page_origin(&state.config, &headers), ..optional_body(&request)? };
    ok(service::sign(&state, &id, &caller, &base, body).await)
}

async fn resumable_status(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
    request: Result<Json<service::ResumableStatusBody>, JsonRejection>,
) -> ApiResult {
    ok(service::resumable_status(&state, &id, &caller, body(request)?).await)
}

async fn sign_parts(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<service::SignPartsBody>, JsonRejection>,
) -> ApiResult {
    let base = base_url(&state.config, &headers)?;
    ok(service::sign_parts(&state, &id, &caller, &base, body(request)?).await)
}

async fn list_parts(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
) -> ApiResult {
    ok(service::list_parts(&state, &id, &caller).await)
}

async fn complete(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: axum::body::Bytes,
) -> ApiResult {
    let base = base_url(&state.config, &headers)?;
    ok(service::complete(&state, &id, &caller, &base, optional_body(&request)?).await)
}

async fn complete_multipart(
    State(state): AppHandle,
    Extension(caller): CallerOf,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<service::CompleteMultipartBody>, JsonRejection>,
) -> ApiResult {
    let base = base_url(&state.config, &headers)?;
    ok(service::complete_multipart(&state, &id, &caller, &base, body(request)?).await)
}

async fn cancel(State(state): AppHandle, Extension(caller): CallerOf, Path(id): Path<String>) -> ApiResult {
    ok(service::cancel(&state, &id, &caller).await)
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
