//! Bearer credentials (presigned URLs, `session_uri`): whoever holds one may
//! write to the store. `Secret` keeps them out of `Debug` output, logs and
//! error messages; the only way to the value is the explicit `expose`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme, host and port only: enough to say where a request went
    /// without handing out the credential.
    pub fn origin(&self) -> &str {
        let after_scheme = self.0.find("://").map_or(0, |i| i + 3);
        let end = self.0[after_scheme..].find(['/', '?', '#']).map_or(self.0.len(), |i| after_scheme + i);
        &self.0[..end]
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}/[redacted])", self.origin())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_shows_only_the_origin() {
        let url = Secret::new("https://store.example:9000/bucket/key?X-Amz-Signature=abc123");
        let shown = format!("{url:?}");
        assert_eq!(shown, "Secret(https://store.example:9000/[redacted])");
        assert!(!shown.contains("abc123"));
        assert!(!shown.contains("bucket"));
    }

    #[test]
    fn origin_of_odd_values_never_panics() {
        assert_eq!(Secret::new("").origin(), "");
        assert_eq!(Secret::new("no-scheme?sig=1").origin(), "no-scheme");
        assert_eq!(Secret::new("http://h").origin(), "http://h");
    }

    #[test]
    fn serializes_as_the_plain_value_for_the_wire() {
        let url = Secret::new("http://h/k?sig=1");
        assert_eq!(serde_json::to_string(&url).unwrap(), "\"http://h/k?sig=1\"");
    }
}
