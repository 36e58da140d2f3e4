//! PKCE (RFC 7636), `S256` only: `plain` gives no protection against a leaked
//! authorization request and is refused (RFC 9700 §2.1.1, ASVS 5 10.4.6).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `code_challenge_method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMethodError {
    /// `plain`, or a missing method (RFC 7636 §4.3: absent means `plain`).
    PlainRefused,
    Unknown,
}

/// Checks `code_challenge_method`. Only `S256` passes.
pub fn check_method(method: Option<&str>) -> Result<(), ChallengeMethodError> {
    match method {
        Some("S256") => Ok(()),
        None | Some("plain") => Err(ChallengeMethodError::PlainRefused),
        Some(_) => Err(ChallengeMethodError::Unknown),
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `code-verifier = 43*128unreserved` (RFC 7636 §4.1).
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(unreserved)
}

/// An S256 challenge is base64url(SHA-256) without padding: exactly 43 characters.
pub fn valid_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `true` when `verifier` is well formed and hashes to `challenge`. The comparison is
/// constant time (the challenge is not secret, but the check costs nothing).
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !valid_verifier(verifier) || !valid_s256_challenge(challenge) {
        return false;
    }
    s256_challenge(verifier)
        .as_bytes()
        .ct_eq(challenge.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(s256_challenge(VERIFIER), CHALLENGE);
        assert!(verify_s256(VERIFIER, CHALLENGE));
    }

    #[test]
    fn wrong_verifier_or_challenge_fails() {
        let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
        assert!(!verify_s256(other, CHALLENGE));
        assert!(!verify_s256(
            VERIFIER,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        // plain (challenge == verifier) never passes
        assert!(!verify_s256(VERIFIER, VERIFIER));
    }

    #[test]
    fn verifier_syntax() {
        let v42 = "a".repeat(42);
        let v43 = "a".repeat(43);
        let v128 = "a".repeat(128);
        let v129 = "a".repeat(129);
        assert!(!valid_verifier(&v42));
        assert!(valid_verifier(&v43));
        assert!(valid_verifier(&v128));
        assert!(!valid_verifier(&v129));
        assert!(valid_verifier(&format!("{}-._~", "A".repeat(40))));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
        assert!(!valid_verifier(&format!("{}/", "a".repeat(43))));
        assert!(!valid_verifier(&format!("{}é", "a".repeat(43))));
        // a syntactically bad verifier fails even if it hashes right
        let bad = format!("{}+", "a".repeat(42));
        assert!(!verify_s256(&bad, &s256_challenge(&bad)));
        let short = "a".repeat(42);
        assert!(!verify_s256(&short, &s256_challenge(&short)));
    }

    #[test]
    fn challenge_syntax() {
        assert!(valid_s256_challenge(CHALLENGE));
        assert!(!valid_s256_challenge(&CHALLENGE[..42]));
        assert!(!valid_s256_challenge(&format!("{CHALLENGE}=")));
        assert!(!valid_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
    }

    #[test]
    fn only_s256_method() {
        assert_eq!(check_method(Some("S256")), Ok(()));
        assert_eq!(
            check_method(Some("plain")),
            Err(ChallengeMethodError::PlainRefused)
        );
        assert_eq!(check_method(None), Err(ChallengeMethodError::PlainRefused));
        assert_eq!(
            check_method(Some("s256")),
            Err(ChallengeMethodError::Unknown)
        );
    }
}
