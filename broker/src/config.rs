//! Configuration from the environment, and the upload profile (what the
//! broker accepts).

use crate::store::gcs::GcsConfig;
use crate::store::s3::S3Config;
use rindle_upload::{ErrorCode, UploadError};
use std::path::PathBuf;
use std::time::Duration;

pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub www_dir: PathBuf,
    pub pkg_dir: PathBuf,
    /// Set when the broker is reached under another address than its Host
    /// header says (a proxy); used for absolute URLs.
    pub public_url: Option<String>,
    /// How long a presigned URL stays valid.
    pub url_ttl: Duration,
    /// How long a session may take before it becomes `expired`.
    pub session_ttl: Duration,
    pub profile: Profile,
    /// Neither: the embedded local-disk store under `DATA_DIR`.
    pub s3: Option<S3Config>,
    pub gcs: Option<GcsConfig>,
    /// How long a resumable session URI stays valid (GCS: a week).
    pub session_uri_ttl: Duration,
    /// An external tus server for `tus` sessions; none: the embedded one.
    pub tus_endpoint: Option<String>,
    /// How long an embedded tus upload lives (the expiration extension).
    pub tus_ttl: Duration,
    pub auth: AuthMode,
    /// Origins whose pages may call with credentials (`ALLOWED_ORIGINS`,
    /// exact or `scheme://host:*`); none: any origin, without credentials.
    pub allowed_origins: Vec<String>,
    /// Host headers whose URLs the broker hands out when `PUBLIC_URL` is
    /// not set (`ALLOWED_HOSTS`, exact or `host:*`).
    pub allowed_hosts: Vec<String>,
    pub limits: LimitsConfig,
}

/// How callers prove who they are.
pub enum AuthMode {
    /// An HttpOnly, SameSite cookie the broker sets on first contact
    /// (anonymous, for the demo).
    Cookie,
    /// `Authorization: Bearer <token>`, one of `AUTH_TOKENS`: each token
    /// is one principal.
    Bearer(Vec<String>),
}

/// What bounds the broker's resources.
pub struct LimitsConfig {
    /// New sessions one client address may start per minute.
    pub sessions_per_minute: u32,
    /// Sessions one caller may have open (not yet ended) at once.
    pub open_sessions: u64,
    /// Longest a protocol call (other than verification) may take.
    pub request_timeout: Duration,
    /// Longest a store request body may send nothing.
    pub idle_timeout: Duration,
    /// How often expired sessions are swept.
    pub sweep_every: Duration,
}

/// Whether `value` is one of `patterns`: exact, or `prefix:*` for any port.
pub fn matches_any(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix(":*") {
        Some(prefix) => value
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        None => pattern == value,
    })
}

fn list(name: &str) -> Result<Vec<String>, String> {
    Ok(env_or(name, String::new())?
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A content type the broker will sign into headers: a MIME type
/// (`type/subtype`, parameters allowed), nothing else.
pub fn is_media_type(value: &str) -> bool {
    value.len() <= 255
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value
            .parse::<mime::Mime>()
            .is_ok_and(|m| !m.type_().as_str().is_empty() && !m.subtype().as_str().is_empty())
}

pub struct Profile {
    pub max_bytes: u64,
    /// Exact types or `type/*`; empty means any.
    pub allowed_types: Vec<String>,
    pub allow_empty: bool,
}

impl Profile {
    /// The one check of a file against the profile, used when a session is
    /// initiated (declared values) and when it is verified (stored values).
    pub fn check(&self, byte_size: u64, content_type: &str) -> Result<(), UploadError> {
        if byte_size == 0 && !self.allow_empty {
            return Err(UploadError::new(ErrorCode::FileEmpty, "empty files are not accepted"));
        }
        if byte_size > self.max_bytes {
            return Err(UploadError::new(
                ErrorCode::FileTooLarge,
                format!("the file has {byte_size} bytes; at most {} are accepted", self.max_bytes),
            ));
        }
        let allowed = self.allowed_types.is_empty()
            || self.allowed_types.iter().any(|pattern| match pattern.strip_suffix("/*") {
                Some(major) => content_type.split('/').next() == Some(major),
                None => pattern == content_type,
            });
        if !allowed {
            return Err(UploadError::new(
                ErrorCode::ContentTypeNotAllowed,
                format!("content type {content_type:?} is not accepted"),
            ));
        }
        Ok(())
    }

    /// When the profile restricts types, the stored bytes must be what
    /// they were declared as: a type with a known signature (magic number)
    /// must show it, and bytes with a known signature must be of the
    /// declared type.
    pub fn check_content(&self, declared: &str, head: &[u8]) -> Result<(), UploadError> {
        if self.allowed_types.is_empty() || head.is_empty() {
            return Ok(());
        }
        let declared = declared.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let sniffer = infer::Infer::new();
        let found = sniffer.get(head).map(|kind| kind.mime_type());
        let matches = match found {
            Some(found) => found == declared,
            None => !sniffer.is_mime_supported(&declared),
        };
        if matches {
            return Ok(());
        }
        Err(UploadError::new(
            ErrorCode::ContentTypeNotAllowed,
            match found {
                Some(found) => format!("the content is {found}, not the declared {declared}"),
                None => format!("the content does not look like the declared {declared}"),
            },
        ))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) => value.parse().map_err(|_| format!("{name}={value:?} is not valid")),
        Err(_) => Ok(default),
    }
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} must be set when S3_ENDPOINT is"))
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        Ok(Config {
            host: env_or("HOST", "127.0.0.1".to_owned())?,
            port: env_or("PORT", 8080)?,
            data_dir: env_or("DATA_DIR", PathBuf::from(".data/broker"))?,
            www_dir: env_or("WWW_DIR", PathBuf::from("www"))?,
            pkg_dir: env_or("PKG_DIR", PathBuf::from("pkg"))?,
            public_url: std::env::var("PUBLIC_URL").ok(),
            url_ttl: Duration::from_secs(env_or("URL_TTL_SECS", 900)?),
            session_ttl: Duration::from_secs(env_or("SESSION_TTL_SECS", 86_400)?),
            profile: Profile {
                max_bytes: env_or("MAX_BYTES", 5 << 30)?,
                allowed_types: list("ALLOWED_TYPES")?,
                allow_empty: env_or("ALLOW_EMPTY", true)?,
            },
            s3: match std::env::var("S3_ENDPOINT") {
                Err(_) => None,
                Ok(endpoint) => Some(S3Config {
                    endpoint,
                    region: env_or("S3_REGION", "us-east-1".to_owned())?,
                    bucket: required("S3_BUCKET")?,
                    access_key_id: required("S3_ACCESS_KEY_ID")?,
                    secret_access_key: required("S3_SECRET_ACCESS_KEY")?,
                    path_style: env_or("S3_PATH_STYLE", true)?,
                }),
            },
            gcs: match std::env::var("GCS_BUCKET") {
                Err(_) => None,
                Ok(bucket) => Some(GcsConfig {
                    base_url: env_or("GCS_BASE_URL", "https://storage.googleapis.com".to_owned())?,
                    bucket,
                    credentials: std::env::var("GCS_CREDENTIALS").ok().map(PathBuf::from),
                }),
            },
            session_uri_ttl: Duration::from_secs(env_or("SESSION_URI_TTL_SECS", 7 * 86_400)?),
            tus_endpoint: std::env::var("TUS_ENDPOINT").ok(),
            tus_ttl: Duration::from_secs(env_or("TUS_EXPIRES_SECS", 86_400)?),
            auth: match env_or("AUTH_MODE", "cookie".to_owned())?.as_str() {
                "cookie" => AuthMode::Cookie,
                "bearer" => {
                    let tokens = list("AUTH_TOKENS")?;
                    if tokens.is_empty() || tokens.iter().any(|t| t.len() < 16) {
                        return Err(
                            "AUTH_MODE=bearer needs AUTH_TOKENS: tokens of 16 or more characters".into()
                        );
                    }
                    AuthMode::Bearer(tokens)
                }
                other => return Err(format!("AUTH_MODE={other:?}: use cookie or bearer")),
            },
            allowed_origins: list("ALLOWED_ORIGINS")?,
            allowed_hosts: list("ALLOWED_HOSTS")?,
            limits: LimitsConfig {
                sessions_per_minute: env_or("SESSIONS_PER_MINUTE", 120)?,
                open_sessions: env_or("MAX_OPEN_SESSIONS", 100)?,
                request_timeout: Duration::from_secs(env_or("REQUEST_TIMEOUT_SECS", 30)?),
                idle_timeout: Duration::from_secs(env_or("IDLE_TIMEOUT_SECS", 60)?),
                sweep_every: Duration::from_secs(env_or("SWEEP_SECS", 60)?),
            },
        })
    }

    /// Hosts to hand out URLs for when nothing says: a broker bound to a
    /// loopback address answers its loopback names on any port (proxies in
    /// front of it included); any other needs `PUBLIC_URL` or
    /// `ALLOWED_HOSTS`.
    pub fn settle_hosts(&mut self) -> Result<(), String> {
        if self.public_url.is_some() || !self.allowed_hosts.is_empty() {
            return Ok(());
        }
        let loopback = self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.host == "localhost";
        if !loopback {
            return Err(format!(
                "HOST={} is not a loopback address: set PUBLIC_URL (or ALLOWED_HOSTS) so that handed-out URLs do not come from the Host header",
                self.host
            ));
        }
        self.allowed_hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"].map(String::from).to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_rules() {
        let profile = Profile {
            max_bytes: 10,
            allowed_types: vec!["image/*".into(), "text/plain".into()],
            allow_empty: false,
        };
        assert!(profile.check(10, "image/png").is_ok());
        assert!(profile.check(1, "text/plain").is_ok());
        assert_eq!(profile.check(11, "image/png").unwrap_err().code, ErrorCode::FileTooLarge);
        assert_eq!(profile.check(0, "image/png").unwrap_err().code, ErrorCode::FileEmpty);
        assert_eq!(profile.check(1, "text/html").unwrap_err().code, ErrorCode::ContentTypeNotAllowed);
        assert_eq!(profile.check(1, "imagex/png").unwrap_err().code, ErrorCode::ContentTypeNotAllowed);
        let open = Profile { max_bytes: 10, allowed_types: vec![], allow_empty: true };
        assert!(open.check(0, "anything/at-all").is_ok());
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn content_must_be_what_it_was_declared_as_when_types_are_restricted() {
        let images = Profile {
            max_bytes: 10,
            allowed_types: vec!["image/*".into(), "text/plain".into()],
            allow_empty: false,
        };
        assert!(images.check_content("image/png", PNG).is_ok());
        let html = b"<!DOCTYPE html><script>alert(1)</script>";
        let refused = images.check_content("image/png", html).unwrap_err();
        assert_eq!(refused.code, ErrorCode::ContentTypeNotAllowed);
        assert_eq!(refused.message, "the content is text/html, not the declared image/png");
        let words = images.check_content("image/png", b"plain words").unwrap_err();
        assert_eq!(words.message, "the content does not look like the declared image/png");
        assert_eq!(
            images.check_content("text/plain", PNG).unwrap_err().message,
            "the content is image/png, not the declared text/plain"
        );
        assert!(images.check_content("text/plain", b"just words").is_ok());
        assert!(images.check_content("image/png; q=1", PNG).is_ok(), "parameters are not the type");
        let open = Profile { max_bytes: 10, allowed_types: vec![], allow_empty: true };
        assert!(open.check_content("image/png", html).is_ok(), "an open profile does not sniff");
    }

    #[test]
    fn content_types_are_media_types() {
        for good in ["text/plain", "image/svg+xml", "text/plain; charset=utf-8", "application/octet-stream"] {
            assert!(is_media_type(good), "{good}");
        }
        for bad in
            ["", "text", "text/", "/plain", "text/plain\r\nX-Evil: 1", "text/plain\n", "tëxt/plain", "a b/c"]
        {
            assert!(!is_media_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn host_and_origin_patterns() {
        let patterns = vec!["http://127.0.0.1:*".to_owned(), "https://app.example".to_owned()];
        assert!(matches_any(&patterns, "http://127.0.0.1:8080"));
        assert!(matches_any(&patterns, "https://app.example"));
        for other in [
            "http://127.0.0.1",
            "http://127.0.0.1:",
            "http://127.0.0.1:80x",
            "http://127.0.0.10:80",
            "https://app.example:1",
        ] {
            assert!(!matches_any(&patterns, other), "{other}");
        }
    }
}
