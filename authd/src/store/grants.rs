//! How the stores keep OIDC grants: authorization codes and access/refresh tokens,
//! looked up by the SHA-256 of the code or token (the value itself is never stored),
//! plus consents. The grant contents are the OIDC core's own types.

use serde::{Deserialize, Serialize};

use crate::oidc::token_request::{CodeGrant, RefreshGrant};

/// SHA-256 of a code or token.
pub type TokenHash = [u8; 32];

/// An authorization code's grant, and the token family it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCode {
    pub grant: CodeGrant,
    /// Tokens issued from this code share it; a replayed code revokes the whole family.
    pub family: String,
}

/// The result of redeeming a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    Fresh(StoredCode),
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

/// An issued access or refresh token. `grant.expires_at` is this token's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub kind: TokenKind,
    pub family: String,
    pub grant: RefreshGrant,
    pub issued: i64,
    /// Refresh tokens: set once rotated; presenting it again is reuse.
    pub used: bool,
    pub revoked: bool,
}

impl TokenRecord {
    pub fn active(&self, now: i64) -> bool {
        !self.revoked && !self.used && now < self.grant.expires_at
    }
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token (returned) is now used; the new one is stored.
    Rotated(TokenRecord),
    /// The token was already rotated: the family has been revoked.
    Reused,
    Invalid,
}

/// A remembered consent (for `pre-configured` consent mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub scopes: crate::oidc::Scopes,
    pub expires: i64,
}
