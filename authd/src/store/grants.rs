//! OIDC grant records: authorization codes, access and refresh tokens, consents and
//! the stable `sub` of each user. Stores keep only SHA-256 hashes of codes and tokens.

use serde::{Deserialize, Serialize};

/// SHA-256 of a code or token.
pub type TokenHash = [u8; 32];

/// What an authorization code stands for until it is redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: i64,
    pub amr: Vec<String>,
    /// Tokens issued from this code share it; a replayed code revokes the whole family.
    pub family: String,
    pub expires: i64,
}

/// The result of redeeming a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    Fresh(CodeGrant),
    /// Used before: the caller revokes `family`.
    Replayed {
        family: String,
    },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        }
    }
}

/// An issued access or refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub kind: TokenKind,
    pub client_id: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub family: String,
    pub issued: i64,
    pub expires: i64,
    pub auth_time: i64,
    pub amr: Vec<String>,
    /// Refresh tokens: set once rotated; presenting it again is reuse.
    pub used: bool,
    pub revoked: bool,
}

impl TokenRecord {
    pub fn active(&self, now: i64) -> bool {
        !self.revoked && !self.used && now < self.expires
    }
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is now used; the new one is stored.
    Rotated(TokenRecord),
    /// The token was already rotated: the family has been revoked.
    Reused,
    Invalid,
}

/// A remembered consent (for `pre-configured` consent mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub scopes: Vec<String>,
    pub expires: i64,
}
