//! Password digests: every format an Authelia users file may hold, and new argon2id hashes.
//!
//! Formats are recognised by prefix and parsed once, when the users file is loaded, so a
//! malformed or hostile digest is reported then and never reaches the login path.
//! Parameters come from the digest itself and are capped so a typo cannot exhaust a Pi.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::Argon2Config;

/// Largest argon2 memory cost we will run (KiB). Authelia's old 1 GiB default OOM-killed Pis.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
const MAX_ARGON2_ITERATIONS: u32 = 16;
const MAX_ARGON2_PARALLELISM: u32 = 16;
/// scrypt N = 2^ln; with r = 8 this caps memory at 256 MiB.
const MAX_SCRYPT_LN: u8 = 18;
const MAX_PBKDF2_ROUNDS: u32 = 10_000_000;
const MAX_SHACRYPT_ROUNDS: u32 = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(
        "unsupported password digest format (expected argon2, sha2crypt, bcrypt, pbkdf2 or scrypt)"
    )]
    Unsupported,
    #[error("malformed {0} digest: {1}")]
    Malformed(&'static str, String),
    #[error("{0} digest parameters exceed the safety limits: {1}")]
    TooCostly(&'static str, String),
}

/// A parsed password digest, ready to verify. `Debug` shows the algorithm only.
#[derive(Clone)]
pub enum PasswordDigest {
    Argon2 {
        algorithm: Algorithm,
        version: Version,
        m: u32,
        t: u32,
        p: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$5$` / `$6$`; verified by the sha-crypt crate from the string.
    ShaCrypt(String),
    /// `$2a$` / `$2b$` / `$2y$`
    Bcrypt(String),
    Pbkdf2 {
        digest: Pbkdf2Digest,
        rounds: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Scrypt {
        ln: u8,
        r: u32,
        p: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl PasswordDigest {
    /// What verifying this digest costs: algorithm and work parameters, without salt or
    /// hash. Digests with equal keys take the same time to verify.
    pub fn cost_key(&self) -> String {
        match self {
            PasswordDigest::Argon2 {
                algorithm,
                version,
                m,
                t,
                p,
                hash,
                ..
            } => format!(
                "argon2 {algorithm:?} {version:?} m={m} t={t} p={p} len={}",
                hash.len()
            ),
            // `$6$rounds=N$salt$hash` / `$6$salt$hash`: the rounds are the cost.
            PasswordDigest::ShaCrypt(s) => {
                let rounds = s.split('$').find(|f| f.starts_with("rounds="));
                format!("shacrypt {} {rounds:?}", s.get(..3).unwrap_or_default())
            }
            // `$2b$12$…`: the cost is the second field.
            PasswordDigest::Bcrypt(s) => format!("bcrypt {:?}", s.split('$').nth(2)),
            PasswordDigest::Pbkdf2 {
                digest,
                rounds,
                hash,
                ..
            } => format!("pbkdf2 {digest:?} {rounds} len={}", hash.len()),
            PasswordDigest::Scrypt { ln, r, p, hash, .. } => {
                format!("scrypt {ln} {r} {p} len={}", hash.len())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf2Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl std::fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordDigest({})", self.algorithm_name())
    }
}

/// Base64 as used in PHC strings: standard alphabet, padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, DigestError> {
    // passlib's "ab64" uses '.' where standard base64 has '+'.
    let s = s.replace('.', "+");
    B64.decode(s.as_bytes())
        .map_err(|e| DigestError::Malformed(what, format!("bad base64: {e}")))
}

fn kv_params<'a>(s: &'a str, what: &'static str) -> Result<Vec<(&'a str, &'a str)>, DigestError> {
    s.split(',')
        .map(|kv| {
            kv.split_once('=')
                .ok_or_else(|| DigestError::Malformed(what, format!("bad parameter {kv:?}")))
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: &str, what: &'static str) -> Result<T, DigestError> {
    s.parse()
        .map_err(|_| DigestError::Malformed(what, format!("bad number {s:?}")))
}

impl PasswordDigest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let s = s.trim();
        if s.starts_with("$argon2") {
            return Self::parse_argon2(s);
        }
        if let Some(rest) = s.strip_prefix("$6$").or_else(|| s.strip_prefix("$5$")) {
            if let Some(r) = rest.strip_prefix("rounds=") {
                let rounds: u32 = num(r.split('$').next().unwrap_or(""), "sha2crypt")?;
                if rounds > MAX_SHACRYPT_ROUNDS {
                    return Err(DigestError::TooCostly(
                        "sha2crypt",
                        format!("rounds={rounds}"),
                    ));
                }
            }
            // Validate the structure now rather than at login.
            if rest.split('$').count() < 2 {
                return Err(DigestError::Malformed(
                    "sha2crypt",
                    "missing salt or hash".into(),
                ));
            }
            return Ok(Self::ShaCrypt(s.to_string()));
        }
        if s.starts_with("$2a$")
            || s.starts_with("$2b$")
            || s.starts_with("$2y$")
            || s.starts_with("$2x$")
        {
            let parts: Vec<&str> = s.split('$').collect();
            let cost: u32 = num(parts.get(2).copied().unwrap_or(""), "bcrypt")?;
            if !(4..=17).contains(&cost) {
                return Err(DigestError::TooCostly("bcrypt", format!("cost {cost}")));
            }
            if parts.get(3).map(|p| p.len()) != Some(53) {
                return Err(DigestError::Malformed(
                    "bcrypt",
                    "salt+hash must be 53 characters".into(),
                ));
            }
            return Ok(Self::Bcrypt(s.to_string()));
        }
        if s.starts_with("$pbkdf2") {
            return Self::parse_pbkdf2(s);
        }
        if s.starts_with("$scrypt$") {
            return Self::parse_scrypt(s);
        }
        Err(DigestError::Unsupported)
    }

    fn parse_argon2(s: &str) -> Result<Self, DigestError> {
        const W: &str = "argon2";
        // $argon2id$v=19$m=65536,t=3,p=4$salt$hash (v= may be absent in very old hashes)
        let parts: Vec<&str> = s.split('$').collect();
        let algorithm = match parts.get(1).copied() {
            Some("argon2id") => Algorithm::Argon2id,
            Some("argon2i") => Algorithm::Argon2i,
            Some("argon2d") => Algorithm::Argon2d,
            _ => return Err(DigestError::Malformed(W, "unknown variant".into())),
        };
        let (version, rest) = match parts.get(2) {
            Some(v) if v.starts_with("v=") => {
                let version = match *v {
                    "v=19" => Version::V0x13,
                    "v=16" => Version::V0x10,
                    _ => return Err(DigestError::Malformed(W, format!("unknown version {v}"))),
                };
                (version, &parts[3..])
            }
            _ => (Version::V0x10, &parts[2..]),
        };
        let [params, salt, hash] = rest else {
            return Err(DigestError::Malformed(
                W,
                "expected $params$salt$hash".into(),
            ));
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for (k, v) in kv_params(params, W)? {
            match k {
                "m" => m = Some(num::<u32>(v, W)?),
                "t" => t = Some(num::<u32>(v, W)?),
                "p" => p = Some(num::<u32>(v, W)?),
                "keyid" | "data" => {}
                _ => return Err(DigestError::Malformed(W, format!("unknown parameter {k}"))),
            }
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err(DigestError::Malformed(W, "m, t and p are required".into()));
        };
        if m > MAX_ARGON2_MEMORY_KIB || t > MAX_ARGON2_ITERATIONS || p > MAX_ARGON2_PARALLELISM {
            return Err(DigestError::TooCostly(W, format!("m={m},t={t},p={p}")));
        }
        let salt = b64(salt, W)?;
        let hash = b64(hash, W)?;
        if salt.len() < argon2::MIN_SALT_LEN || hash.len() < 4 {
            return Err(DigestError::Malformed(W, "salt or hash too short".into()));
        }
        Params::new(m, t, p, Some(hash.len()))
            .map_err(|e| DigestError::Malformed(W, e.to_string()))?;
        Ok(Self::Argon2 {
            algorithm,
            version,
            m,
            t,
            p,
            salt,
            hash,
        })
    }

    fn parse_pbkdf2(s: &str) -> Result<Self, DigestError> {
        const W: &str = "pbkdf2";
        // passlib / Authelia: $pbkdf2-sha512$<rounds>$<ab64 salt>$<ab64 hash>
        let parts: Vec<&str> = s.split('$').collect();
        let digest = match parts.get(1).copied() {
            Some("pbkdf2") => Pbkdf2Digest::Sha1,
            Some("pbkdf2-sha256") => Pbkdf2Digest::Sha256,
            Some("pbkdf2-sha512") => Pbkdf2Digest::Sha512,
            Some(other) => {
                return Err(DigestError::Malformed(
                    W,
                    format!("unsupported variant {other}"),
                ));
            }
            None => return Err(DigestError::Unsupported),
        };
        let [_, _, rounds, salt, hash] = parts.as_slice() else {
            return Err(DigestError::Malformed(
                W,
                "expected $rounds$salt$hash".into(),
            ));
        };
        let rounds: u32 = match rounds.strip_prefix("i=") {
            Some(r) => num(r.split(',').next().unwrap_or(""), W)?,
            None => num(rounds, W)?,
        };
        if rounds == 0 || rounds > MAX_PBKDF2_ROUNDS {
            return Err(DigestError::TooCostly(W, format!("rounds={rounds}")));
        }
        let salt = b64(salt, W)?;
        let hash = b64(hash, W)?;
        if hash.len() < 16 {
            return Err(DigestError::Malformed(W, "hash too short".into()));
        }
        Ok(Self::Pbkdf2 {
            digest,
            rounds,
            salt,
            hash,
        })
    }

    fn parse_scrypt(s: &str) -> Result<Self, DigestError> {
        const W: &str = "scrypt";
        let parts: Vec<&str> = s.split('$').collect();
        let [_, _, params, salt, hash] = parts.as_slice() else {
            return Err(DigestError::Malformed(
                W,
                "expected $ln=..,r=..,p=..$salt$hash".into(),
            ));
        };
        let (mut ln, mut r, mut p) = (None, None, None);
        for (k, v) in kv_params(params, W)? {
            match k {
                "ln" => ln = Some(num::<u8>(v, W)?),
                "r" => r = Some(num::<u32>(v, W)?),
                "p" => p = Some(num::<u32>(v, W)?),
                _ => return Err(DigestError::Malformed(W, format!("unknown parameter {k}"))),
            }
        }
        let (Some(ln), Some(r), Some(p)) = (ln, r, p) else {
            return Err(DigestError::Malformed(W, "ln, r and p are required".into()));
        };
        // memory = 128 * r * 2^ln bytes
        if ln > MAX_SCRYPT_LN || r > 32 || p > 16 || (128u64 * u64::from(r)) << ln > 256 << 20 {
            return Err(DigestError::TooCostly(W, format!("ln={ln},r={r},p={p}")));
        }
        scrypt::Params::new(ln, r, p).map_err(|e| DigestError::Malformed(W, e.to_string()))?;
        let salt = b64(salt, W)?;
        let hash = b64(hash, W)?;
        if hash.len() < 16 {
            return Err(DigestError::Malformed(W, "hash too short".into()));
        }
        Ok(Self::Scrypt {
            ln,
            r,
            p,
            salt,
            hash,
        })
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self {
            Self::Argon2 { algorithm, .. } => match algorithm {
                Algorithm::Argon2id => "argon2id",
                Algorithm::Argon2i => "argon2i",
                Algorithm::Argon2d => "argon2d",
            },
            Self::ShaCrypt(s) if s.starts_with("$6$") => "sha512crypt",
            Self::ShaCrypt(_) => "sha256crypt",
            Self::Bcrypt(_) => "bcrypt",
            Self::Pbkdf2 { .. } => "pbkdf2",
            Self::Scrypt { .. } => "scrypt",
        }
    }

    /// Memory this digest needs to verify, in argon2 blocks (1 KiB each); 0 for others.
    pub fn argon2_blocks(&self) -> usize {
        match self {
            Self::Argon2 { m, .. } => *m as usize,
            _ => 0,
        }
    }

    /// Checks `password`. `blocks` is scratch memory reused across calls so that a burst
    /// of logins does not leave freed 64 MiB buffers behind in the allocator.
    pub fn verify(&self, password: &[u8], blocks: &mut Vec<Block>) -> bool {
        match self {
            Self::Argon2 {
                algorithm,
                version,
                m,
                t,
                p,
                salt,
                hash,
            } => {
                let Ok(params) = Params::new(*m, *t, *p, Some(hash.len())) else {
                    return false;
                };
                let a = Argon2::new(*algorithm, *version, params);
                let need = a.params().block_count();
                if blocks.len() < need {
                    blocks.resize(need, Block::new());
                }
                let mut out = Zeroizing::new(vec![0u8; hash.len()]);
                let Some(scratch) = blocks.get_mut(..need) else {
                    return false;
                };
                if a.hash_password_into_with_memory(password, salt, &mut out, scratch)
                    .is_err()
                {
                    return false;
                }
                out.ct_eq(hash).into()
            }
            Self::ShaCrypt(s) => {
                use password_hash::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, s.as_str())
                    .is_ok()
            }
            Self::Bcrypt(s) => {
                // bcrypt ignores bytes past 72; refusing them avoids silent truncation matches.
                if password.len() > 72 {
                    return false;
                }
                // The crate does not know $2y$/$2x$; they are the same algorithm as $2b$.
                let normalised = if s.starts_with("$2y$") || s.starts_with("$2x$") {
                    format!("$2b${}", &s[4..])
                } else {
                    s.clone()
                };
                bcrypt::verify(password, &normalised).unwrap_or(false)
            }
            Self::Pbkdf2 {
                digest,
                rounds,
                salt,
                hash,
            } => {
                let mut out = Zeroizing::new(vec![0u8; hash.len()]);
                match digest {
                    Pbkdf2Digest::Sha1 => {
                        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, *rounds, &mut out)
                    }
                    Pbkdf2Digest::Sha256 => {
                        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, *rounds, &mut out)
                    }
                    Pbkdf2Digest::Sha512 => {
                        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, *rounds, &mut out)
                    }
                }
                out.ct_eq(hash).into()
            }
            Self::Scrypt {
                ln,
                r,
                p,
                salt,
                hash,
            } => {
                let Ok(params) = scrypt::Params::new(*ln, *r, *p) else {
                    return false;
                };
                let mut out = Zeroizing::new(vec![0u8; hash.len()]);
                if scrypt::scrypt(password, salt, &params, &mut out).is_err() {
                    return false;
                }
                out.ct_eq(hash).into()
            }
        }
    }
}

/// Fills `buf` from the OS CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails if the kernel has no entropy source at all; nothing sane remains.
    if getrandom::fill(buf).is_err() {
        std::process::abort();
    }
}

/// A new PHC-format argon2 hash with the configured parameters
/// (default `$argon2id$v=19$m=65536,t=3,p=4$…`, Authelia's and HaLOS's choice).
pub fn hash_password(password: &[u8], cfg: &Argon2Config) -> Result<String, DigestError> {
    let algorithm = match cfg.variant.as_str() {
        "argon2i" => Algorithm::Argon2i,
        "argon2d" => Algorithm::Argon2d,
        _ => Algorithm::Argon2id,
    };
    let params = Params::new(
        cfg.memory,
        cfg.iterations,
        cfg.parallelism,
        Some(cfg.key_length as usize),
    )
    .map_err(|e| DigestError::Malformed("argon2", e.to_string()))?;
    let mut salt = vec![0u8; cfg.salt_length as usize];
    random_bytes(&mut salt);
    let a = Argon2::new(algorithm, Version::V0x13, params);
    let mut out = vec![0u8; cfg.key_length as usize];
    a.hash_password_into(password, &salt, &mut out)
        .map_err(|e| DigestError::Malformed("argon2", e.to_string()))?;
    Ok(phc(cfg, &salt, &out))
}

/// A digest with the configured parameters that no password matches (random salt and
/// random output): verifying against it costs exactly one hash, like a real user's, but
/// making it costs nothing (start-up must not spend a 64 MiB hash on it).
pub fn unmatchable_digest(cfg: &Argon2Config) -> String {
    let mut salt = vec![0u8; cfg.salt_length as usize];
    random_bytes(&mut salt);
    let mut out = vec![0u8; cfg.key_length as usize];
    random_bytes(&mut out);
    phc(cfg, &salt, &out)
}

fn phc(cfg: &Argon2Config, salt: &[u8], out: &[u8]) -> String {
    format!(
        "${}$v=19$m={},t={},p={}${}${}",
        cfg.variant,
        cfg.memory,
        cfg.iterations,
        cfg.parallelism,
        general_purpose::STANDARD_NO_PAD.encode(salt),
        general_purpose::STANDARD_NO_PAD.encode(out)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_and_hostile_digests() {
        assert_eq!(
            PasswordDigest::parse("plaintext").unwrap_err(),
            DigestError::Unsupported
        );
        assert!(matches!(
            PasswordDigest::parse(
                "$argon2id$v=19$m=4194304,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
            )
            .unwrap_err(),
            DigestError::TooCostly(..)
        ));
        assert!(matches!(
            PasswordDigest::parse("$argon2id$v=19$m=65536,t=3$c2FsdHNhbHQ$aGFzaA").unwrap_err(),
            DigestError::Malformed(..)
        ));
        assert!(
            PasswordDigest::parse("$scrypt$ln=30,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA").is_err()
        );
        assert!(PasswordDigest::parse("$2b$31$abc").is_err());
    }

    #[test]
    fn new_hash_round_trips_with_default_parameters() {
        let cfg = Argon2Config::default();
        let h = hash_password(b"pw", &cfg).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"), "{h}");
        let d = PasswordDigest::parse(&h).unwrap();
        let mut blocks = Vec::new();
        assert!(d.verify(b"pw", &mut blocks));
        assert!(!d.verify(b"pw2", &mut blocks));
        assert_eq!(blocks.len(), 65536);
    }
}
