//! Mutable state (sessions, bans, …) behind one interface with two implementations:
//! the local SQLite store (default; hot data served from memory) and Redis (several
//! instances acting as one). The domain code only sees [`Store`].

pub mod api_tokens;
pub mod grants;
pub mod local;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use api_tokens::{ApiToken, LoginCode};
pub use grants::{Consent, Redemption, Rotation, StoredCode, TokenHash, TokenKind, TokenRecord};
pub use local::LocalStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database schema: {0}")]
    Schema(String),
    #[error("{0}")]
    Io(String),
    #[error("the state store is unavailable")]
    Unavailable,
    #[error("the state database thread is gone")]
    Closed,
}

/// SHA-256 of a session id: what stores keep instead of the id itself.
pub type SessionKey = [u8; 32];

/// How strongly a session is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum AuthLevel {
    None = 0,
    OneFactor = 1,
    TwoFactor = 2,
}

impl AuthLevel {
    pub fn from_u8(v: u8) -> AuthLevel {
        match v {
            2 => AuthLevel::TwoFactor,
            1 => AuthLevel::OneFactor,
            _ => AuthLevel::None,
        }
    }
}

/// A logged-in browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(with = "hex_key")]
    pub key: SessionKey,
    pub username: String,
    pub level: AuthLevel,
    /// The cookie domain the session was issued for; a cookie moved to another domain is refused.
    pub cookie_domain: String,
    pub created: i64,
    pub last_activity: i64,
    pub remember_me: bool,
    pub auth_time: i64,
    /// RFC 8176 methods used (`pwd`, `otp`, `hwk`, …).
    pub amr: Vec<String>,
    /// Fingerprint of the user's password digest at login: a password change ends the session.
    pub pw_fingerprint: u64,
}

pub(crate) mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("bad key length"))
    }
}

/// What is being regulated: a user name or a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanKind {
    User,
    Ip,
}

impl BanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::User => "user",
            BanKind::Ip => "ip",
        }
    }
}

/// The state operations the daemon needs; implemented by every backend.
pub trait Store: Send + Sync + 'static {
    /// The hot path: must not touch the disk in the local store.
    fn session(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<Arc<Session>>, StoreError>> + Send;
    fn save_session(&self, s: Session) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records activity; backends may persist it lazily.
    fn touch_session(
        &self,
        s: &Session,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_session(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Ends every session of `username`; returns how many.
    fn delete_user_sessions(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Counts a failed login for `subject`; returns the number within `window` seconds.
    fn record_failure(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
        window: i64,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    fn clear_failures(
        &self,
        kind: BanKind,
        subject: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn ban(
        &self,
        kind: BanKind,
        subject: &str,
        until: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `Some(until)` while banned.
    fn banned_until(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// The stable, opaque OIDC `sub` of `username`, created on first use.
    fn subject(&self, username: &str) -> impl Future<Output = Result<String, StoreError>> + Send;
    fn save_code(
        &self,
        hash: TokenHash,
        code: StoredCode,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Single use, atomically: the first redemption gets the grant, later ones learn the family.
    fn redeem_code(
        &self,
        hash: TokenHash,
        now: i64,
    ) -> impl Future<Output = Result<Redemption, StoreError>> + Send;
    fn save_token(
        &self,
        hash: TokenHash,
        token: TokenRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn token(
        &self,
        hash: TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;
    /// Marks refresh token `old` used and stores `new` in its place; a reused token
    /// revokes its whole family.
    fn rotate_refresh(
        &self,
        old: TokenHash,
        new: TokenHash,
        new_token: TokenRecord,
        now: i64,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send;
    fn revoke_token(
        &self,
        hash: TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;
    fn revoke_family(&self, family: &str) -> impl Future<Output = Result<u32, StoreError>> + Send;
    fn revoke_user_tokens(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<Consent>, StoreError>> + Send;
    fn save_consent(
        &self,
        username: &str,
        client_id: &str,
        consent: Consent,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// An API token by key id. The hot path: answered from memory in the local store.
    fn api_token(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Arc<ApiToken>>, StoreError>> + Send;
    /// Every API token (for listing; secrets are not in the records).
    fn api_tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>, StoreError>> + Send;
    /// Creates or replaces the token with `token.id`.
    fn save_api_token(
        &self,
        token: ApiToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Revokes (deletes) one token; `false` if there was none.
    fn delete_api_token(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Revokes every API token of `username`; returns how many.
    fn delete_user_api_tokens(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Records use of a token at `now`; backends may persist it lazily.
    fn touch_api_token(
        &self,
        id: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn save_login_code(
        &self,
        hash: TokenHash,
        code: LoginCode,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Single use, atomically: removes the code and returns it if it had not expired.
    fn take_login_code(
        &self,
        hash: TokenHash,
        now: i64,
    ) -> impl Future<Output = Result<Option<LoginCode>, StoreError>> + Send;
    /// Drops every pending login code of `username`; returns how many.
    fn delete_user_login_codes(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
}

/// The configured backend. An enum rather than a trait object: no boxing on the hot path.
#[derive(Clone)]
pub enum AnyStore {
    Local(Arc<LocalStore>),
}

/// Forwards a method to the backend inside [`AnyStore`].
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Local($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn api_token(&self, id: &str) -> Result<Option<Arc<ApiToken>>, StoreError> {
        delegate!(self, s => s.api_token(id).await)
    }
    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        delegate!(self, s => s.api_tokens().await)
    }
    async fn save_api_token(&self, token: ApiToken) -> Result<(), StoreError> {
        delegate!(self, s => s.save_api_token(token).await)
    }
    async fn delete_api_token(&self, id: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_api_token(id).await)
    }
    async fn delete_user_api_tokens(&self, username: &str) -> Result<u32, StoreError> {
        delegate!(self, s => s.delete_user_api_tokens(username).await)
    }
    async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        delegate!(self, s => s.touch_api_token(id, now).await)
    }
    async fn save_login_code(&self, hash: TokenHash, code: LoginCode) -> Result<(), StoreError> {
        delegate!(self, s => s.save_login_code(hash, code).await)
    }
    async fn take_login_code(
        &self,
        hash: TokenHash,
        now: i64,
    ) -> Result<Option<LoginCode>, StoreError> {
        delegate!(self, s => s.take_login_code(hash, now).await)
    }
    async fn delete_user_login_codes(&self, username: &str) -> Result<u32, StoreError> {
        delegate!(self, s => s.delete_user_login_codes(username).await)
    }
    async fn subject(&self, username: &str) -> Result<String, StoreError> {
        delegate!(self, s => s.subject(username).await)
    }
    async fn save_code(&self, hash: TokenHash, code: StoredCode) -> Result<(), StoreError> {
        delegate!(self, s => s.save_code(hash, code).await)
    }
    async fn redeem_code(&self, hash: TokenHash, now: i64) -> Result<Redemption, StoreError> {
        delegate!(self, s => s.redeem_code(hash, now).await)
    }
    async fn save_token(&self, hash: TokenHash, token: TokenRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.save_token(hash, token).await)
    }
    async fn token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.token(hash).await)
    }
    async fn rotate_refresh(
        &self,
        old: TokenHash,
        new: TokenHash,
        new_token: TokenRecord,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        delegate!(self, s => s.rotate_refresh(old, new, new_token, now).await)
    }
    async fn revoke_token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.revoke_token(hash).await)
    }
    async fn revoke_family(&self, family: &str) -> Result<u32, StoreError> {
        delegate!(self, s => s.revoke_family(family).await)
    }
    async fn revoke_user_tokens(&self, username: &str) -> Result<u32, StoreError> {
        delegate!(self, s => s.revoke_user_tokens(username).await)
    }
    async fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        delegate!(self, s => s.consent(username, client_id).await)
    }
    async fn save_consent(
        &self,
        username: &str,
        client_id: &str,
        consent: Consent,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.save_consent(username, client_id, consent).await)
    }
    async fn session(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        delegate!(self, s => s.session(key).await)
    }
    async fn save_session(&self, session: Session) -> Result<(), StoreError> {
        delegate!(self, s => s.save_session(session).await)
    }
    async fn touch_session(&self, session: &Session, now: i64) -> Result<(), StoreError> {
        delegate!(self, s => s.touch_session(session, now).await)
    }
    async fn delete_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        delegate!(self, s => s.delete_session(key).await)
    }
    async fn delete_user_sessions(&self, username: &str) -> Result<u32, StoreError> {
        delegate!(self, s => s.delete_user_sessions(username).await)
    }
    async fn record_failure(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
        window: i64,
    ) -> Result<u32, StoreError> {
        delegate!(self, s => s.record_failure(kind, subject, now, window).await)
    }
    async fn clear_failures(&self, kind: BanKind, subject: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.clear_failures(kind, subject).await)
    }
    async fn ban(&self, kind: BanKind, subject: &str, until: i64) -> Result<(), StoreError> {
        delegate!(self, s => s.ban(kind, subject, until).await)
    }
    async fn banned_until(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        delegate!(self, s => s.banned_until(kind, subject, now).await)
    }
}
