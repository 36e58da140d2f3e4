//! One-time login codes (DESIGN §11): an administrator issues one
//! (`halos-authctl user login-code NAME`, D-Bus `IssueLoginCode`) so a user can sign in
//! once, e.g. to enrol a first passkey, without a mail server.
//!
//! Codes are 15 characters of Crockford's base32 (75 bits), shown in three dash-separated groups of five (e.g. `7K3QD-M9XRT-2WBHP`);
//! typing is forgiving (case, spaces, dashes, `O`→`0`, `I`/`L`→`1`). Only their SHA-256
//! is stored; redeeming removes the code atomically, and failures are regulated per
//! client address.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::RegulationConfig;
use crate::store::{BanKind, LoginCode, Store, StoreError, TokenHash};
use crate::users::hash::random_bytes;
use crate::users::{User, UsersDb};

/// Crockford's base32: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 15;
const GROUP: usize = 5;
/// Lifetime when none is given.
pub const DEFAULT_TTL: i64 = 15 * 60;
/// Longest lifetime accepted: a code is a password in plain sight.
pub const MAX_TTL: i64 = 7 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum LoginCodeError {
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("user {0:?} is disabled (enable it first: halos-authctl user update {0} --enable)")]
    Disabled(String),
    #[error("the lifetime must be between 1 second and 7 days")]
    BadLifetime,
    /// Unknown, used, expired, for a disabled user, or throttled: one answer for all.
    #[error("invalid or expired login code")]
    Invalid,
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

/// A code just issued; `code` is shown once.
pub struct IssuedCode {
    pub code: Zeroizing<String>,
    pub username: String,
    pub expires: i64,
}

/// Canonical form of what someone typed: `None` if it cannot be a code.
pub fn normalize(typed: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_LEN));
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() >= CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

fn code_hash(canonical: &str) -> TokenHash {
    Sha256::digest(canonical.as_bytes()).into()
}

fn generate() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; CODE_LEN]);
    random_bytes(raw.as_mut());
    // 256 is a multiple of 32: masking keeps the distribution uniform.
    raw.iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect::<String>()
        .into()
}

/// three dash-separated groups of five (e.g. `7K3QD-M9XRT-2WBHP`).
fn display(canonical: &str) -> Zeroizing<String> {
    let groups: Vec<&str> = (0..canonical.len())
        .step_by(GROUP)
        .map(|i| &canonical[i..(i + GROUP).min(canonical.len())])
        .collect();
    Zeroizing::new(groups.join("-"))
}

/// Issues a single-use login code for the enabled user `username`, valid `ttl` seconds.
pub async fn issue<S: Store>(
    store: &S,
    users: &UsersDb,
    username: &str,
    now: i64,
    ttl: i64,
) -> Result<IssuedCode, LoginCodeError> {
    if !(1..=MAX_TTL).contains(&ttl) {
        return Err(LoginCodeError::BadLifetime);
    }
    // Only administrators issue codes: telling unknown from disabled users leaks nothing.
    match users.get(username) {
        None => return Err(LoginCodeError::NoSuchUser(username.to_string())),
        Some(u) if u.disabled => return Err(LoginCodeError::Disabled(username.to_string())),
        Some(_) => {}
    }
    let canonical = generate();
    let expires = now + ttl;
    store
        .save_login_code(
            code_hash(&canonical),
            LoginCode {
                username: username.to_string(),
                created: now,
                expires,
            },
        )
        .await?;
    tracing::info!(target: "audit", event = "login_code_issued", user = %username, expires);
    Ok(IssuedCode {
        code: display(&canonical),
        username: username.to_string(),
        expires,
    })
}

/// Regulation for code guesses: the configured one, or a strict default when password
/// regulation is off (codes are always throttled).
fn limits(cfg: &RegulationConfig) -> (u32, i64, i64) {
    if cfg.max_retries > 0 {
        (
            cfg.max_retries,
            cfg.find_time.as_secs() as i64,
            cfg.ban_time.as_secs() as i64,
        )
    } else {
        (5, 120, 300)
    }
}

/// Redeems `typed` from `client_ip`: the code is consumed and its (still enabled) user
/// returned. Every failure is [`LoginCodeError::Invalid`]; failures count against the
/// address, and a banned address cannot redeem (its attempts do not consume codes).
pub async fn redeem<S: Store>(
    store: &S,
    users: &UsersDb,
    regulation: &RegulationConfig,
    client_ip: IpAddr,
    typed: &str,
    now: i64,
) -> Result<Arc<User>, LoginCodeError> {
    let subject = format!("login-code:{}", client_ip.to_canonical());
    if store
        .banned_until(BanKind::Ip, &subject, now)
        .await?
        .is_some()
    {
        tracing::info!(target: "audit", event = "login", result = "banned", ip = %client_ip, factor = "code");
        return Err(LoginCodeError::Invalid);
    }
    let code = match normalize(typed) {
        Some(c) => store.take_login_code(code_hash(&c), now).await?,
        None => None,
    };
    let user = code.and_then(|c| users.active(&c.username).cloned());
    if let Some(user) = user {
        store.clear_failures(BanKind::Ip, &subject).await?;
        tracing::info!(target: "audit", event = "login", result = "success", user = %user.name, ip = %client_ip, factor = "code");
        return Ok(user);
    }
    let (max, window, ban) = limits(regulation);
    let n = store
        .record_failure(BanKind::Ip, &subject, now, window)
        .await?;
    if n >= max {
        store.ban(BanKind::Ip, &subject, now + ban).await?;
        tracing::warn!(target: "audit", event = "ban", kind = "ip", subject = %subject, until = now + ban, "banned after {n} invalid login codes");
    }
    tracing::info!(target: "audit", event = "login", result = "failure", ip = %client_ip, factor = "code");
    Err(LoginCodeError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use crate::store::sqlite::Db;

    #[test]
    fn codes_look_right_and_typing_is_forgiving() {
        let c = generate();
        assert_eq!(c.len(), CODE_LEN);
        let shown = display(&c);
        assert_eq!(shown.len(), CODE_LEN + 2);
        assert_eq!(
            normalize(&shown).as_deref().map(String::as_str),
            Some(c.as_str())
        );
        assert_eq!(
            normalize(" abcde-fghjk-mnopq ")
                .as_deref()
                .map(String::as_str),
            Some("ABCDEFGHJKMN0PQ")
        );
        assert!(normalize("ABCDE-FGHJK-MNPQ").is_none(), "too short");
        assert!(normalize("ABCDE-FGHJK-MNPQRS").is_none(), "too long");
        assert!(
            normalize("ABCDE-FGHJK-MNPQU").is_none(),
            "U is not in the alphabet"
        );
    }

    #[tokio::test]
    async fn single_use_expiry_disabled_users_and_throttling() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        let users = crate::api_token::tests::users();
        let reg = RegulationConfig::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(matches!(
            issue(&s, &users, "bob", 0, 60).await,
            Err(LoginCodeError::Disabled(_))
        ));
        assert!(matches!(
            issue(&s, &users, "nobody", 0, 60).await,
            Err(LoginCodeError::NoSuchUser(_))
        ));
        assert!(matches!(
            issue(&s, &users, "ann", 0, 0).await,
            Err(LoginCodeError::BadLifetime)
        ));
        let c = issue(&s, &users, "ann", 1000, 60).await.unwrap();
        let u = redeem(&s, &users, &reg, ip, &c.code.to_lowercase(), 1010)
            .await
            .unwrap();
        assert_eq!(u.name, "ann");
        assert!(matches!(
            redeem(&s, &users, &reg, ip, &c.code, 1011).await,
            Err(LoginCodeError::Invalid)
        ));
        let late = issue(&s, &users, "ann", 1000, 60).await.unwrap();
        assert!(matches!(
            redeem(&s, &users, &reg, ip, &late.code, 1060).await,
            Err(LoginCodeError::Invalid)
        ));
        // Enough failures ban the address: even a good code is refused and kept.
        let other: IpAddr = "10.9.9.9".parse().unwrap();
        let good = issue(&s, &users, "ann", 2000, 600).await.unwrap();
        for _ in 0..limits(&reg).0 {
            let _ = redeem(&s, &users, &reg, other, "ZZZZZ-ZZZZZ-ZZZZZ", 2001).await;
        }
        assert!(matches!(
            redeem(&s, &users, &reg, other, &good.code, 2002).await,
            Err(LoginCodeError::Invalid)
        ));
        assert!(redeem(&s, &users, &reg, ip, &good.code, 2003).await.is_ok());
    }
}
