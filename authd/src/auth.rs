//! First-factor authentication with Authelia-style regulation.
//!
//! Every attempt costs one password verification, whatever happens: unknown users,
//! disabled users and banned users are checked against the dummy digest, so neither the
//! answer nor its timing tells an attacker which case applies.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::RegulationConfig;
use crate::store::{BanKind, Store, StoreError};
use crate::users::User;
use crate::users::store::UsersStore;
use crate::users::verifier::{PasswordVerifier, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong password, unknown user, disabled user or ban: deliberately one variant.
    #[error("authentication failed")]
    Failed,
    #[error("too many logins in progress")]
    Busy,
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("password verification unavailable")]
    Unavailable,
}

impl From<VerifyError> for LoginError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Busy => LoginError::Busy,
            VerifyError::Stopped => LoginError::Unavailable,
        }
    }
}

/// A stable 64-bit fingerprint of a password digest; a session remembers it so that a
/// password change (by any tool) ends the session.
pub fn password_fingerprint(digest_text: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(digest_text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

pub(crate) fn regulated(cfg: &RegulationConfig, kind: BanKind) -> bool {
    cfg.max_retries > 0 && cfg.modes.iter().any(|m| m == kind.as_str())
}

/// What a password check needs from the daemon.
pub struct Authenticator<'a, S: Store> {
    pub users: &'a UsersStore,
    pub verifier: &'a PasswordVerifier,
    pub store: &'a S,
    pub regulation: RegulationConfig,
}

/// One login attempt.
pub struct Attempt<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub client_ip: IpAddr,
    pub now: i64,
}

/// Checks the attempt's credentials. On success returns the user.
pub async fn first_factor<S: Store>(
    auth: &Authenticator<'_, S>,
    attempt: Attempt<'_>,
) -> Result<Arc<User>, LoginError> {
    let Authenticator {
        users,
        verifier,
        store,
        regulation,
    } = auth;
    let Attempt {
        username,
        password,
        client_ip,
        now,
    } = attempt;
    let ip = client_ip.to_canonical().to_string();
    let mut banned = false;
    for (kind, subject) in [(BanKind::User, username), (BanKind::Ip, ip.as_str())] {
        if regulated(regulation, kind) && store.banned_until(kind, subject, now).await?.is_some() {
            banned = true;
        }
    }
    let snapshot = users.snapshot();
    let user = snapshot.active(username).cloned();
    // Unknown, disabled and banned: one verification against a real user's digest (same
    // cost as a real attempt), whose outcome is ignored.
    let (digest, real) = match (&user, banned) {
        (Some(u), false) => (Some(Arc::clone(&u.digest)), true),
        _ => (snapshot.decoy().cloned(), false),
    };
    let ok = verifier.verify(password, digest).await? && real;
    if ok && let Some(user) = user {
        // Failures are forgiven only once the login is complete: with a TOTP enrolled the
        // password alone must not reset the count, or knowing it would allow grinding
        // the code space (catalogue A2). The TOTP step clears them.
        if store.totp(username).await?.is_none() {
            for (kind, subject) in [(BanKind::User, username), (BanKind::Ip, ip.as_str())] {
                store.clear_failures(kind, subject).await?;
            }
        }
        tracing::info!(target: "audit", event = "login", result = "success", user = %username, ip = %ip, factor = "password");
        return Ok(user);
    }
    if banned {
        tracing::info!(target: "audit", event = "login", result = "banned", user = %username, ip = %ip);
        return Err(LoginError::Failed);
    }
    let window = regulation.find_time.as_secs() as i64;
    for (kind, subject) in [(BanKind::User, username), (BanKind::Ip, ip.as_str())] {
        if !regulated(regulation, kind) {
            continue;
        }
        let n = store.record_failure(kind, subject, now, window).await?;
        if n >= regulation.max_retries {
            let until = now + regulation.ban_time.as_secs() as i64;
            store.ban(kind, subject, until).await?;
            tracing::warn!(target: "audit", event = "ban", kind = kind.as_str(), subject = %subject, until, "banned after {n} failed logins");
        }
    }
    tracing::info!(target: "audit", event = "login", result = "failure", user = %username, ip = %ip);
    Err(LoginError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Argon2Config;
    use crate::store::LocalStore;
    use crate::store::sqlite::Db;

    fn setup() -> (tempfile::TempDir, UsersStore, PasswordVerifier, LocalStore) {
        let cheap = Argon2Config {
            memory: 1024,
            iterations: 1,
            parallelism: 1,
            ..Argon2Config::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.yml");
        let h = crate::users::hash_password(b"right", &cheap).unwrap();
        std::fs::write(
            &p,
            format!("users:\n  ann:\n    displayname: Ann\n    password: '{h}'\n  dis:\n    displayname: D\n    password: '{h}'\n    disabled: true\n"),
        )
        .unwrap();
        let users = UsersStore::open(&p).unwrap();
        let v = PasswordVerifier::start(1, 8, &cheap);
        (
            dir,
            users,
            v,
            LocalStore::with_db(Db::memory().unwrap()).unwrap(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn ff(
        users: &UsersStore,
        v: &PasswordVerifier,
        store: &LocalStore,
        reg: &RegulationConfig,
        now: i64,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Arc<User>, LoginError> {
        let auth = Authenticator {
            users,
            verifier: v,
            store,
            regulation: reg.clone(),
        };
        first_factor(
            &auth,
            Attempt {
                username,
                password,
                client_ip,
                now,
            },
        )
        .await
    }

    #[tokio::test]
    async fn wrong_unknown_disabled_and_banned_all_fail_alike() {
        let (_d, users, v, store) = setup();
        let reg = RegulationConfig::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(
            ff(&users, &v, &store, &reg, 0, "ann", "right", ip)
                .await
                .is_ok()
        );
        for (u, p) in [("ann", "wrong"), ("nobody", "right"), ("dis", "right")] {
            assert!(
                matches!(
                    ff(&users, &v, &store, &reg, 1, u, p, ip).await,
                    Err(LoginError::Failed)
                ),
                "{u}"
            );
        }
        // ann has 1 failure, the ip 3: the ip is banned now, so even the right password fails.
        assert!(matches!(
            ff(&users, &v, &store, &reg, 2, "ann", "right", ip).await,
            Err(LoginError::Failed)
        ));
        let other_ip: IpAddr = "10.0.0.10".parse().unwrap();
        assert!(
            ff(&users, &v, &store, &reg, 3, "ann", "right", other_ip)
                .await
                .is_ok()
        );
        // after ban_time the ip is free again
        assert!(
            ff(&users, &v, &store, &reg, 2 + 301, "ann", "right", ip)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn user_is_banned_after_max_retries_from_any_address() {
        let (_d, users, v, store) = setup();
        let reg = RegulationConfig {
            modes: vec!["user".into()],
            ..RegulationConfig::default()
        };
        for i in 0..3u8 {
            let ip = IpAddr::from([10, 0, 1, i]);
            assert!(
                ff(&users, &v, &store, &reg, 10, "ann", "bad", ip)
                    .await
                    .is_err()
            );
        }
        let ip = IpAddr::from([10, 0, 2, 1]);
        assert!(
            ff(&users, &v, &store, &reg, 11, "ann", "right", ip)
                .await
                .is_err()
        );
        assert!(
            ff(&users, &v, &store, &reg, 10 + 301, "ann", "right", ip)
                .await
                .is_ok()
        );
    }
}
