//! Second factors and first-login rules, free of HTTP and storage details: TOTP
//! (RFC 6238) registration and verification with replay refusal and regulation, the
//! documented default password, and password strength.

use std::net::IpAddr;

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};

use crate::auth::{LoginError, regulated};
use crate::config::{RegulationConfig, TotpConfig};
use crate::store::{BanKind, StepUse, Store, TotpRecord};

/// The password HaLOS images document for the first admin; it must be changed at first login.
pub const DEFAULT_PASSWORD: &str = "halos";

/// Whether `password` is the documented default. Constant time, no hashing: it is
/// checked on the plaintext of a login that already succeeded.
pub fn is_default_password(password: &str) -> bool {
    let d = DEFAULT_PASSWORD.as_bytes();
    let p = password.as_bytes();
    // Length is not secret here (the default is public); the comparison of bytes is.
    p.len() == d.len() && bool::from(p.ct_eq(d))
}

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("The new password must differ from the default password.")]
    Default,
    #[error("The two new passwords do not match.")]
    Mismatch,
    #[error(
        "The new password is too weak{0}. Use a longer passphrase, for example several unrelated words."
    )]
    TooWeak(String),
    #[error("The new password is too long.")]
    TooLong,
}

/// The minimum zxcvbn score (0–4) a new password needs.
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// Checks a new password (and its confirmation) for strength. `user_inputs` are words
/// an attacker would try first (user name, display name, email).
pub fn check_new_password(
    password: &str,
    confirm: &str,
    user_inputs: &[&str],
) -> Result<(), WeakPassword> {
    if password.len() > 1024 {
        return Err(WeakPassword::TooLong);
    }
    if password != confirm {
        return Err(WeakPassword::Mismatch);
    }
    if is_default_password(password) {
        return Err(WeakPassword::Default);
    }
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    if u8::from(entropy.score()) < MIN_PASSWORD_SCORE {
        let hint = entropy
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(WeakPassword::TooWeak(hint));
    }
    Ok(())
}

fn algorithm(name: &str) -> Algorithm {
    match name {
        "sha256" => Algorithm::SHA256,
        "sha512" => Algorithm::SHA512,
        _ => Algorithm::SHA1,
    }
}

/// A fresh, not yet confirmed registration with the configured parameters.
pub fn new_registration(cfg: &TotpConfig, now: i64) -> TotpRecord {
    let mut secret = vec![0u8; cfg.secret_size.clamp(20, 64) as usize];
    crate::users::hash::random_bytes(&mut secret);
    let algorithm = match cfg.algorithm.to_ascii_lowercase().as_str() {
        a @ ("sha256" | "sha512") => a.to_string(),
        _ => "sha1".to_string(),
    };
    TotpRecord {
        secret_hex: hex::encode(&secret),
        algorithm,
        digits: cfg.digits.clamp(6, 8) as u8,
        period: u64::from(cfg.period.clamp(15, 300)),
        created: now,
        last_used_step: 0,
    }
}

fn totp(record: &TotpRecord, skew: u16, issuer: Option<&str>, account: &str) -> Option<Totp> {
    let secret = hex::decode(&record.secret_hex).ok()?;
    let b = Builder::new()
        .with_algorithm(algorithm(&record.algorithm))
        .with_digits(record.digits)
        .with_secret(secret)
        .with_skew(skew)
        .with_step_duration(record.period)
        .with_account_name(account.replace(':', "_"))
        .with_issuer(issuer.map(|i| i.replace(':', "_")));
    b.build().ok()
}

/// The `otpauth://` URI an authenticator app imports (also shown as a QR code).
pub fn otpauth_uri(record: &TotpRecord, issuer: &str, account: &str) -> Option<String> {
    totp(record, 1, Some(issuer), account)?.to_url().ok()
}

/// The secret in base32, for typing into an app by hand.
pub fn secret_base32(record: &TotpRecord) -> String {
    hex::decode(&record.secret_hex)
        .map(|s| totp_rs::Secret::from(s).to_base32())
        .unwrap_or_default()
}

/// The QR code of `uri` as an SVG document.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(220, 220)
            .build(),
    )
}

/// The time step `code` is valid for at `now` (± `skew` steps), if any. Does not
/// consider replay.
pub fn code_step(record: &TotpRecord, code: &str, now: i64, skew: u16) -> Option<u64> {
    let code = code.trim();
    if code.len() != usize::from(record.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(record, skew, None, "user")?.check(code, u64::try_from(now).ok()?)
}

/// Checks a TOTP code as a login step: regulated like passwords (failures count
/// toward the same bans), a step used once is refused afterwards. Every failure —
/// wrong code, replay, not enrolled, ban — is the same [`LoginError::Failed`].
pub async fn verify_totp<S: Store>(
    store: &S,
    regulation: &RegulationConfig,
    skew: u16,
    username: &str,
    client_ip: IpAddr,
    code: &str,
    now: i64,
) -> Result<(), LoginError> {
    let ip = client_ip.to_canonical().to_string();
    let subjects = [(BanKind::User, username), (BanKind::Ip, ip.as_str())];
    let mut banned = false;
    for (kind, subject) in subjects {
        if regulated(regulation, kind) && store.banned_until(kind, subject, now).await?.is_some() {
            banned = true;
        }
    }
    let record = store.totp(username).await?;
    let step = record
        .as_ref()
        .filter(|_| !banned)
        .and_then(|r| code_step(r, code, now, skew));
    let accepted = match step {
        Some(step) => store.use_totp_step(username, step).await? == StepUse::Accepted,
        None => false,
    };
    if accepted {
        for (kind, subject) in subjects {
            store.clear_failures(kind, subject).await?;
        }
        tracing::info!(target: "audit", event = "login", result = "success", user = %username, ip = %ip, factor = "totp");
        return Ok(());
    }
    if !banned {
        let window = regulation.find_time.as_secs() as i64;
        for (kind, subject) in subjects {
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
    }
    let why = if step.is_some() {
        "replay"
    } else {
        "wrong code"
    };
    tracing::info!(target: "audit", event = "login", result = "failure", user = %username, ip = %ip, factor = "totp", reason = why);
    Err(LoginError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use crate::store::sqlite::Db;

    /// RFC 6238 appendix B's SHA-1 secret.
    fn rfc_record() -> TotpRecord {
        TotpRecord {
            secret_hex: hex::encode(b"12345678901234567890"),
            algorithm: "sha1".into(),
            digits: 8,
            period: 30,
            created: 0,
            last_used_step: 0,
        }
    }

    #[test]
    fn rfc6238_vectors_and_skew() {
        let r = rfc_record();
        assert_eq!(code_step(&r, "94287082", 59, 0), Some(1));
        assert_eq!(code_step(&r, "07081804", 1111111109, 0), Some(37037036));
        // One step of skew either way, not two.
        assert_eq!(code_step(&r, "94287082", 59 + 30, 1), Some(1));
        assert_eq!(code_step(&r, "94287082", 59 + 60, 1), None);
        assert_eq!(code_step(&r, "94287082", 59 + 30, 0), None);
        assert_eq!(code_step(&r, "9428708", 59, 1), None, "wrong length");
        assert_eq!(code_step(&r, "9428708x", 59, 1), None);
    }

    #[test]
    fn registration_uses_config_and_makes_a_uri() {
        let r = new_registration(&TotpConfig::default(), 5);
        assert_eq!((r.algorithm.as_str(), r.digits, r.period), ("sha1", 6, 30));
        assert_eq!(r.secret_hex.len(), 64);
        let uri = otpauth_uri(&r, "HaLOS", "admin").unwrap();
        assert!(uri.starts_with("otpauth://totp/HaLOS:admin?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", secret_base32(&r))));
        assert!(qr_svg(&uri).unwrap().starts_with("<?xml"));
    }

    #[test]
    fn default_password_and_strength() {
        assert!(is_default_password("halos"));
        assert!(!is_default_password("halos "));
        assert!(!is_default_password("Halos"));
        assert_eq!(
            check_new_password("halos", "halos", &[]),
            Err(WeakPassword::Default)
        );
        assert_eq!(
            check_new_password("a", "b", &[]),
            Err(WeakPassword::Mismatch)
        );
        assert!(matches!(
            check_new_password("password1", "password1", &[]),
            Err(WeakPassword::TooWeak(_))
        ));
        assert!(
            check_new_password(
                "correct horse battery staple 93",
                "correct horse battery staple 93",
                &[]
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn replay_and_brute_force_are_refused() {
        let store = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        let reg = RegulationConfig::default();
        let ip: IpAddr = "10.1.1.1".parse().unwrap();
        let mut r = rfc_record();
        r.digits = 6;
        store.save_totp("ann", r.clone()).await.unwrap();
        let now = 1_000_000;
        let code = {
            let t = totp(&r, 0, None, "x").unwrap();
            t.generate(now as u64)
        };
        let code = code.to_string();
        verify_totp(&store, &reg, 1, "ann", ip, &code, now)
            .await
            .unwrap();
        assert!(
            verify_totp(&store, &reg, 1, "ann", ip, &code, now + 1)
                .await
                .is_err(),
            "the same step twice is a replay"
        );
        // The previous step's code (within skew) is older than the used one: refused too.
        let t = totp(&r, 0, None, "x").unwrap();
        let older = t.generate((now - 30) as u64).to_string();
        assert!(
            verify_totp(&store, &reg, 1, "ann", ip, &older, now)
                .await
                .is_err()
        );
        // That was 2 failures; a third wrong code bans, then even a fresh valid code fails.
        assert!(
            verify_totp(&store, &reg, 1, "ann", ip, "000000", now)
                .await
                .is_err()
        );
        let next = t.generate((now + 30) as u64).to_string();
        assert!(
            verify_totp(&store, &reg, 1, "ann", ip, &next, now + 30)
                .await
                .is_err(),
            "banned"
        );
        let later = now + 30 + 301;
        let fresh = t.generate(later as u64).to_string();
        verify_totp(&store, &reg, 1, "ann", ip, &fresh, later)
            .await
            .unwrap();
        assert!(
            verify_totp(&store, &reg, 1, "bob", ip, &fresh, later)
                .await
                .is_err(),
            "not enrolled"
        );
    }
}
