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
                allowed_types: env_or("ALLOWED_TYPES", String::new())?
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
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
        })
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
}
