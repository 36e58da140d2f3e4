//! How stores keep API tokens and one-time login codes. Both are looked up by a public
//! key (the token's key id, the code's SHA-256); the secrets themselves are never stored.

use serde::{Deserialize, Serialize};

/// An API token for scripts (DESIGN §6, §11). The presented token is
/// `halos_<id>_<secret>`; only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public key id: how the token is found, listed and revoked.
    pub id: String,
    pub username: String,
    /// A label for people (`backup script`).
    #[serde(default)]
    pub name: String,
    #[serde(with = "super::hex_key")]
    pub secret_hash: [u8; 32],
    /// Host glob the token is limited to (`*` any characters, `?` one), if any.
    #[serde(default)]
    pub host: Option<String>,
    /// Path glob the token is limited to, if any.
    #[serde(default)]
    pub path: Option<String>,
    pub created: i64,
    #[serde(default)]
    pub expires: Option<i64>,
    /// Persisted lazily (at most about once a minute per token).
    #[serde(default)]
    pub last_used: Option<i64>,
}

impl ApiToken {
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

/// A one-time login code, stored under the SHA-256 of the normalised code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCode {
    pub username: String,
    pub created: i64,
    pub expires: i64,
}
