//! How the stores keep second factors: one TOTP registration per user, any number of
//! passkeys per user, and short-lived single-use ceremony state (WebAuthn challenges,
//! a TOTP secret awaiting its first code). Plain serde records so every backend can keep
//! them as key/value pairs.

use serde::{Deserialize, Serialize};

/// A confirmed TOTP registration. The parameters are kept per registration: a later
/// change of the `totp:` defaults does not break authenticators already enrolled.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The shared secret, hex-encoded.
    pub secret_hex: String,
    /// `sha1`, `sha256` or `sha512`.
    pub algorithm: String,
    pub digits: u8,
    pub period: u64,
    pub created: i64,
    /// The last accepted time step: a code for it or an earlier step is a replay.
    pub last_used_step: u64,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("created", &self.created)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// One registered passkey.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyRecord {
    /// The credential id, base64url without padding (unique across users).
    pub credential_id: String,
    pub username: String,
    /// The user's name for it ("Phone", "YubiKey").
    pub name: String,
    pub created: i64,
    pub last_used: Option<i64>,
    /// webauthn-rs's credential (public key, counter, …), as it serialises it.
    pub passkey: serde_json::Value,
}

/// Outcome of presenting a TOTP time step for use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUse {
    Accepted,
    /// That step (or a later one) was already used.
    Replayed,
    /// The user has no TOTP registration (any more).
    NotEnrolled,
}
