//! The broker protocol's routes below the broker endpoint
//! (docs/broker-protocol.md): the client builds its URLs from them and the
//! reference broker mounts its handlers on them. `{id}` is the session id
//! (axum's path syntax). `show` is a GET; every other call is a POST.

pub const INITIATE: &str = "";
pub const SHOW: &str = "/{id}";
pub const SIGN: &str = "/{id}/sign";
pub const SIGN_PARTS: &str = "/{id}/parts/sign";
pub const LIST_PARTS: &str = "/{id}/parts";
pub const COMPLETE: &str = "/{id}/complete";
pub const COMPLETE_MULTIPART: &str = "/{id}/multipart/complete";
pub const RESUMABLE_STATUS: &str = "/{id}/resumable/status";
pub const CANCEL: &str = "/{id}/cancel";

/// The route with the session id filled in.
pub fn path(route: &str, session_id: &str) -> String {
    route.replacen("{id}", session_id, 1)
}
