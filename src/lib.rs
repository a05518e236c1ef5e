//! rindle-upload: a browser upload client for Rindle-style direct-to-storage
//! upload sessions. The modules below are a sans-IO core (no browser types,
//! tested natively); `web` is the thin browser edge.

pub mod broker;
pub mod digest;
pub mod engine;
pub mod error;
pub mod events;
pub mod multipart;
pub mod options;
mod presigned_put;
pub mod progress;
pub mod queue;
mod recovery;
pub mod resumable;
pub mod retry;
pub mod secret;
pub mod session;
pub mod state;
mod strategy;
pub mod time;
mod toolbox;
pub mod transport;
pub mod tus;
pub mod wire;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod web;

pub use error::{ErrorCode, UploadError};
pub use session::{Session, UploadStrategy};
pub use state::SessionState;
