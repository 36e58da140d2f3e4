//! API tokens for scripts (DESIGN §6, §11): `halos_<key id>_<secret>`.
//!
//! The key id is public (listed, used to revoke, and to find the record without a
//! scan); the 256-bit secret is only ever held as its SHA-256, compared in constant
//! time. A slow password hash would buy nothing for a random 256-bit secret and would
//! cost the forward-auth hot path.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::store::{ApiToken, Store, StoreError};
use crate::users::UsersDb;
use crate::users::hash::random_bytes;

pub const PREFIX: &str = "halos_";
/// Key ids are this many random bytes, hex-encoded.
const KEY_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const MAX_GLOB_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no enabled user named {0:?}")]
    NoSuchUser(String),
    #[error("invalid {what} scope {glob:?}: {why}")]
    BadScope {
        what: &'static str,
        glob: String,
        why: &'static str,
    },
    #[error("the expiry must be in the future")]
    BadExpiry,
    #[error("no API token with id {0:?}")]
    NotFound(String),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

/// A token just created: the secret text, shown once, and what was stored.
pub struct NewToken {
    pub token: Zeroizing<String>,
    pub record: ApiToken,
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub name: String,
    pub host: Option<String>,
    pub path: Option<String>,
    /// Lifetime in seconds; `None` never expires.
    pub ttl: Option<i64>,
}

fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn check_glob(what: &'static str, glob: Option<String>) -> Result<Option<String>, TokenError> {
    let Some(g) = glob else { return Ok(None) };
    let bad = |why| TokenError::BadScope {
        what,
        glob: g.clone(),
        why,
    };
    if g.is_empty() {
        return Err(bad("empty"));
    }
    if g.len() > MAX_GLOB_LEN {
        return Err(bad("too long"));
    }
    if g.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("contains spaces or control characters"));
    }
    if what == "path" && !g.starts_with('/') && !g.starts_with('*') {
        return Err(bad("a path glob starts with / or *"));
    }
    Ok(Some(if what == "host" {
        g.to_ascii_lowercase()
    } else {
        g
    }))
}

/// Creates a token for the enabled user `username` and stores it.
pub async fn create<S: Store>(
    store: &S,
    users: &UsersDb,
    username: &str,
    spec: TokenSpec,
    now: i64,
) -> Result<NewToken, TokenError> {
    if users.active(username).is_none() {
        return Err(TokenError::NoSuchUser(username.to_string()));
    }
    let host = check_glob("host", spec.host)?;
    let path = check_glob("path", spec.path)?;
    if spec.ttl.is_some_and(|t| t <= 0) {
        return Err(TokenError::BadExpiry);
    }
    let mut id = [0u8; KEY_ID_BYTES];
    random_bytes(&mut id);
    let id = hex::encode(id);
    let mut raw = Zeroizing::new([0u8; SECRET_BYTES]);
    random_bytes(raw.as_mut());
    let secret = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw));
    let record = ApiToken {
        id: id.clone(),
        username: username.to_string(),
        name: spec.name,
        secret_hash: secret_hash(&secret),
        host,
        path,
        created: now,
        expires: spec.ttl.map(|t| now.saturating_add(t)),
        last_used: None,
    };
    store.save_api_token(record.clone()).await?;
    tracing::info!(target: "audit", event = "api_token_created", user = %username, id = %id);
    Ok(NewToken {
        token: Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str())),
        record,
    })
}

/// Revokes the token with key id `id`.
pub async fn revoke<S: Store>(store: &S, id: &str) -> Result<(), TokenError> {
    if store.delete_api_token(id).await? {
        tracing::info!(target: "audit", event = "api_token_revoked", id = %id);
        Ok(())
    } else {
        Err(TokenError::NotFound(id.to_string()))
    }
}

/// Splits `halos_<id>_<secret>`; `None` when it does not have that shape.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == KEY_ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty() && secret.len() <= 128).then_some((id, secret))
}

/// Why a presented token was refused (for logs only: clients get one answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Expired,
    OutOfScope,
}

/// Checks a presented token for a request to `host` + `path` at `now`: one SHA-256
/// and a memory lookup. The hash comparison runs whether or not the id is known.
pub async fn authenticate<S: Store>(
    store: &S,
    presented: &str,
    host: &str,
    path: &str,
    now: i64,
) -> Result<Arc<ApiToken>, Refusal> {
    let Some((id, secret)) = parse(presented) else {
        return Err(Refusal::Malformed);
    };
    let found = store.api_token(id).await.ok().flatten();
    let hash = secret_hash(secret);
    let expected = found.as_ref().map_or([0u8; 32], |t| t.secret_hash);
    let same: bool = hash.ct_eq(&expected).into();
    let Some(token) = found.filter(|_| same) else {
        return Err(Refusal::Unknown);
    };
    if token.expired(now) {
        return Err(Refusal::Expired);
    }
    if !in_scope(&token, host, path) {
        return Err(Refusal::OutOfScope);
    }
    Ok(token)
}

/// Whether `host` and `path` (no query) fall within the token's globs.
pub fn in_scope(token: &ApiToken, host: &str, path: &str) -> bool {
    token
        .host
        .as_deref()
        .is_none_or(|g| glob_match(g, &host.to_ascii_lowercase()))
        && token.path.as_deref().is_none_or(|g| glob_match(g, path))
}

/// Shell-style glob: `*` matches any run of characters (`/` and `.` included), `?` one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single-star backtracking: linear-ish, no recursion blow-up.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Ends every token of `username` (disabled or deleted user).
pub async fn revoke_user<S: Store>(store: &S, username: &str) -> Result<u32, StoreError> {
    store.delete_user_api_tokens(username).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::LocalStore;
    use crate::store::sqlite::Db;

    #[test]
    fn globs() {
        assert!(glob_match("*.example.com", "app.example.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("/api/*", "/api/v1/x"));
        assert!(!glob_match("/api/*", "/apix"));
        assert!(glob_match("/a?c", "/abc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("a*b*c", "aXbYc"));
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse("halos_0123456789abcdef_s3cr-t_x"),
            Some(("0123456789abcdef", "s3cr-t_x"))
        );
        assert_eq!(parse("halos_0123_abc"), None);
        assert_eq!(parse("other_0123456789abcdef_abc"), None);
        assert_eq!(parse("halos_0123456789abcdef_"), None);
    }

    /// `ann` enabled, `bob` disabled.
    pub(crate) fn users() -> UsersDb {
        let cheap = crate::config::Argon2Config {
            memory: 1024,
            iterations: 1,
            parallelism: 1,
            ..Default::default()
        };
        let h = crate::users::hash_password(b"pw", &cheap).unwrap();
        let yaml = format!(
            "users:\n  ann:\n    displayname: Ann\n    password: '{h}'\n  bob:\n    displayname: Bob\n    password: '{h}'\n    disabled: true\n"
        );
        UsersDb::parse(&yaml, "test").unwrap()
    }

    #[tokio::test]
    async fn create_authenticate_scope_expiry_revoke() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        let u = users();
        assert!(matches!(
            create(&s, &u, "bob", TokenSpec::default(), 0).await,
            Err(TokenError::NoSuchUser(_))
        ));
        let spec = TokenSpec {
            name: "ci".into(),
            host: Some("*.Example.com".into()),
            path: Some("/api/*".into()),
            ttl: Some(100),
        };
        let t = create(&s, &u, "ann", spec, 1000).await.unwrap();
        let tok = t.token.as_str();
        let ok = authenticate(&s, tok, "app.example.com", "/api/x", 1050).await;
        assert_eq!(ok.unwrap().username, "ann");
        let refused = |host, path, now| {
            let s = &s;
            async move { authenticate(s, tok, host, path, now).await.err() }
        };
        assert_eq!(
            refused("evil.org", "/api/x", 1050).await,
            Some(Refusal::OutOfScope)
        );
        assert_eq!(
            refused("app.example.com", "/other", 1050).await,
            Some(Refusal::OutOfScope)
        );
        assert_eq!(
            refused("app.example.com", "/api/x", 1100).await,
            Some(Refusal::Expired)
        );
        let mut wrong = tok.to_string();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            authenticate(&s, &wrong, "app.example.com", "/api/x", 1050)
                .await
                .err(),
            Some(Refusal::Unknown)
        );
        assert_eq!(
            authenticate(&s, "garbage", "a", "/", 0).await.err(),
            Some(Refusal::Malformed)
        );
        revoke(&s, &t.record.id).await.unwrap();
        assert_eq!(
            refused("app.example.com", "/api/x", 1050).await,
            Some(Refusal::Unknown)
        );
        assert!(matches!(
            revoke(&s, &t.record.id).await,
            Err(TokenError::NotFound(_))
        ));
    }
}
