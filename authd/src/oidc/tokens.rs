//! Opaque tokens: authorization codes, access tokens, refresh tokens.
//!
//! 256 random bits, base64url without padding (RFC 6749 Appendix A characters only),
//! behind a short type prefix so a leaked token is recognisable by secret scanners and
//! the endpoints can tell the kinds apart without a lookup. Storage keeps only
//! [`token_hash`]; a database dump therefore contains no usable token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A source of random bytes. Production uses [`OsRng`]; tests inject a fixed sequence.
pub trait Rng {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        crate::users::hash::random_bytes(buf);
    }
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn fill(&mut self, buf: &mut [u8]) {
        (**self).fill(buf);
    }
}

/// Random bytes per token: 256 bits (RFC 6749 §10.10 asks for ≥ 128; conformance
/// CC-09/CC-10 and B-37 check length and entropy).
pub const TOKEN_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    AuthorizationCode,
    AccessToken,
    RefreshToken,
}

impl TokenKind {
    pub const ALL: [TokenKind; 3] = [
        TokenKind::AuthorizationCode,
        TokenKind::AccessToken,
        TokenKind::RefreshToken,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "hac_",
            Self::AccessToken => "hat_",
            Self::RefreshToken => "hrt_",
        }
    }

    /// The kind a token claims to be, from its prefix and shape. Only a hint: the token
    /// is still looked up by its hash.
    pub fn of(token: &str) -> Option<TokenKind> {
        Self::ALL.into_iter().find(|k| {
            token.strip_prefix(k.prefix()).is_some_and(|rest| {
                rest.len() == ENCODED_LEN
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
    }
}

/// Length of the base64url part: 32 bytes → 43 characters.
const ENCODED_LEN: usize = 43;

/// A new token of `kind`, e.g. `hat_q9…` (4 + 43 characters).
pub fn generate_token(kind: TokenKind, rng: &mut impl Rng) -> String {
    let mut buf = [0u8; TOKEN_BYTES];
    rng.fill(&mut buf);
    let mut s = String::with_capacity(kind.prefix().len() + ENCODED_LEN);
    s.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(buf, &mut s);
    s
}

/// SHA-256 of the whole token string: the only form storage keeps. A plain hash is
/// enough (unlike passwords) because the token carries 256 bits of entropy.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
pub(crate) mod test_rng {
    use super::Rng;

    /// Deterministic bytes: 0, 1, 2, … continuing across calls.
    #[derive(Debug, Default)]
    pub struct CountingRng(pub u8);

    impl Rng for CountingRng {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_rng::CountingRng;
    use super::*;

    #[test]
    fn tokens_have_prefix_256_bits_and_url_safe_chars() {
        let mut rng = CountingRng::default();
        let t = generate_token(TokenKind::AccessToken, &mut rng);
        assert_eq!(t, "hat_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(TokenKind::of(&t), Some(TokenKind::AccessToken));
        let c = generate_token(TokenKind::AuthorizationCode, &mut rng);
        assert_ne!(c, t);
        assert_eq!(TokenKind::of(&c), Some(TokenKind::AuthorizationCode));
        let r = generate_token(TokenKind::RefreshToken, &mut OsRng);
        assert_eq!(TokenKind::of(&r), Some(TokenKind::RefreshToken));
        assert_eq!(r.len(), 4 + 43);
        // RFC 6749 A.17 (refresh token) and A.11 (code) allow %x20-7E; ours is narrower.
        assert!(r.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    }

    #[test]
    fn os_tokens_differ() {
        let a = generate_token(TokenKind::RefreshToken, &mut OsRng);
        let b = generate_token(TokenKind::RefreshToken, &mut OsRng);
        assert_ne!(a, b);
    }

    #[test]
    fn kind_rejects_malformed() {
        assert_eq!(TokenKind::of("hat_short"), None);
        assert_eq!(
            TokenKind::of("xyz_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
            None
        );
        assert_eq!(
            TokenKind::of("hat_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+"),
            None
        );
    }

    #[test]
    fn hash_is_sha256_of_the_string() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hex::encode(token_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
