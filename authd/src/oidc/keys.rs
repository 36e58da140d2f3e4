//! Signing keys: RS256 (the OIDC default every client supports) and ES256.
//!
//! Keys are generated on first start and kept as DER files in the keys directory
//! (directory 0700, files 0600), one file per key:
//!
//! ```text
//! <alg>-<created unix seconds>-<kid>.der     e.g. rs256-1767225600-Xb3k…Q.der
//! ```
//!
//! RSA keys are PKCS#8, EC keys SEC1, as `compact_jwt` reads and writes them. The `kid`
//! is the RFC 7638 JWK thumbprint of the public key, so it is the same on every start
//! and anyone can recompute it from the JWKS; the file name only repeats it (a mismatch
//! is refused as a sign of a damaged or mixed-up file). Several keys per algorithm may
//! exist: all are published in the JWKS, the newest (largest `created`) signs. Rotation
//! = write a new key with [`generate_key`] and reload; delete the old file once the
//! tokens it signed have expired (conformance DYN-17, security.md O10).

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use compact_jwt::crypto::{JwsRs256Signer, JwsRs256Verifier};
use compact_jwt::jws::JwsBuilder;
use compact_jwt::{
    JwaAlg, JwsCompact, JwsEs256Signer, JwsEs256Verifier, JwsSigner, JwsSignerToVerifier,
    JwsVerifier,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::issuer::Issuer;

/// Smallest RSA modulus we load (RFC 7518 §3.3: 2048 bits or larger).
pub const MIN_RSA_BITS: usize = 2048;
/// Tokens longer than this are not even parsed (an ID token of ours is ~1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A JWS algorithm we sign ID tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SigningAlg {
    RS256,
    ES256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 2] = [SigningAlg::RS256, SigningAlg::ES256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }

    /// Exact, case-sensitive (`alg` values are case-sensitive, RFC 7515 §4.1.1).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn file_prefix(self) -> &'static str {
        match self {
            Self::RS256 => "rs256",
            Self::ES256 => "es256",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a valid private key for its algorithm")]
    Corrupt(PathBuf),
    #[error("{path}: the file name says kid {named:?} but the key's thumbprint is {actual:?}")]
    KidMismatch {
        path: PathBuf,
        named: String,
        actual: String,
    },
    #[error("{path}: RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS} required)")]
    WeakKey { path: PathBuf, bits: usize },
    #[error("{0}: is a symbolic link; refusing to read a key through it")]
    Symlink(PathBuf),
    #[error("no {0} signing key loaded")]
    NoKey(&'static str),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Why a JWS presented to us (an `id_token_hint`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenVerifyError {
    #[error("token too long")]
    TooLong,
    /// Not a compact JWS, or an `alg` we do not know at all (`none`, `PS256`, …).
    #[error("malformed token")]
    Malformed,
    /// A known but never-accepted algorithm: HS256 (an HMAC keyed with our public key
    /// is the classic algorithm-confusion forgery).
    #[error("algorithm {0} is not accepted")]
    UnsupportedAlg(String),
    #[error("token has no kid")]
    MissingKid,
    #[error("unknown kid")]
    UnknownKid,
    #[error("bad signature")]
    BadSignature,
    #[error("issuer mismatch")]
    WrongIssuer,
    #[error("missing or malformed claim {0}")]
    BadClaim(&'static str),
}

#[derive(Clone)]
enum Signer {
    Rs(Box<JwsRs256Signer>),
    Es(Box<JwsEs256Signer>),
}

#[derive(Clone)]
enum Verifier {
    Rs(Box<JwsRs256Verifier>),
    Es(Box<JwsEs256Verifier>),
}

#[derive(Clone)]
struct KeyEntry {
    alg: SigningAlg,
    kid: String,
    created: i64,
    signer: Signer,
    verifier: Verifier,
    /// The public JWK, as published.
    jwk: Value,
}

/// The provider's signing keys. Immutable once loaded; share it in an `Arc`.
#[derive(Clone)]
pub struct SigningKeys {
    /// Sorted by algorithm, then newest first: the first entry of an algorithm signs.
    keys: Vec<KeyEntry>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for k in &self.keys {
            l.entry(&format_args!(
                "{} {} created {}",
                k.alg.as_str(),
                k.kid,
                k.created
            ));
        }
        l.finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Big-endian integers in JWKs use the minimum number of octets (RFC 7518 §6.3.1).
fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    b.get(first..).unwrap_or(b)
}

/// RFC 7638 thumbprint: base64url(SHA-256) of the required members in lexical order,
/// no whitespace.
fn thumbprint(canonical: &str) -> String {
    b64(&Sha256::digest(canonical.as_bytes()))
}

fn rsa_public(signer: &JwsRs256Signer) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    match signer.public_key_as_jwk() {
        Ok(compact_jwt::Jwk::RSA { n, e, .. }) => Ok((
            strip_leading_zeros(&n).to_vec(),
            strip_leading_zeros(&e).to_vec(),
        )),
        _ => Err(KeyError::Sign("cannot export RSA public key".into())),
    }
}

fn ec_public(signer: &JwsEs256Signer) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    match signer.public_key_as_jwk() {
        // EC coordinates keep their full 32-byte length (RFC 7518 §6.2.1.2).
        Ok(compact_jwt::Jwk::EC { x, y, .. }) => Ok((x, y)),
        _ => Err(KeyError::Sign("cannot export EC public key".into())),
    }
}

impl KeyEntry {
    fn from_der(alg: SigningAlg, der: &[u8], created: i64, path: &Path) -> Result<Self, KeyError> {
        match alg {
            SigningAlg::RS256 => {
                let mut signer = JwsRs256Signer::from_rs256_der(der)
                    .map_err(|_| KeyError::Corrupt(path.to_path_buf()))?;
                Self::from_rs(&mut signer, created, path)
            }
            SigningAlg::ES256 => {
                let mut signer = JwsEs256Signer::from_es256_der(der)
                    .map_err(|_| KeyError::Corrupt(path.to_path_buf()))?;
                Self::from_es(&mut signer, created)
            }
        }
    }

    fn from_rs(signer: &mut JwsRs256Signer, created: i64, path: &Path) -> Result<Self, KeyError> {
        let (n, e) = rsa_public(signer)?;
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if bits < MIN_RSA_BITS {
            return Err(KeyError::WeakKey {
                path: path.to_path_buf(),
                bits,
            });
        }
        let (n, e) = (b64(&n), b64(&e));
        let kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
        signer.set_kid(&kid);
        let verifier = signer
            .get_verifier()
            .map_err(|e| KeyError::Sign(format!("{e:?}")))?;
        Ok(Self {
            alg: SigningAlg::RS256,
            jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}),
            kid,
            created,
            signer: Signer::Rs(Box::new(signer.clone())),
            verifier: Verifier::Rs(Box::new(verifier)),
        })
    }

    fn from_es(signer: &mut JwsEs256Signer, created: i64) -> Result<Self, KeyError> {
        let (x, y) = ec_public(signer)?;
        let (x, y) = (b64(&x), b64(&y));
        let kid = thumbprint(&format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
        ));
        signer.set_kid(&kid);
        let verifier = signer
            .get_verifier()
            .map_err(|e| KeyError::Sign(format!("{e:?}")))?;
        Ok(Self {
            alg: SigningAlg::ES256,
            jwk: json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256", "x": x, "y": y}),
            kid,
            created,
            signer: Signer::Es(Box::new(signer.clone())),
            verifier: Verifier::Es(Box::new(verifier)),
        })
    }
}

/// Parses `<alg>-<created>-<kid>.der`.
fn parse_file_name(name: &str) -> Option<(SigningAlg, i64, &str)> {
    let stem = name.strip_suffix(".der")?;
    let (alg, rest) = stem.split_once('-')?;
    let alg = SigningAlg::ALL
        .into_iter()
        .find(|a| a.file_prefix() == alg)?;
    let (created, kid) = rest.split_once('-')?;
    if created.is_empty() || !created.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let created = created.parse().ok()?;
    let kid_ok = !kid.is_empty()
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    kid_ok.then_some((alg, created, kid))
}

fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), "keys directory was accessible to others; setting mode 0700");
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
            }
            Ok(())
        }
        Ok(_) => Err(KeyError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir)),
        Err(e) => Err(io(dir)(e)),
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyError::Symlink(path.to_path_buf()));
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = f.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(KeyError::Corrupt(path.to_path_buf()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "private key was readable by others; setting mode 0600");
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    let mut der = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(16 * 1024));
    f.take(64 * 1024).read_to_end(&mut der).map_err(io(path))?;
    Ok(der)
}

/// Generates a new key for `alg`, stored as `<alg>-<now>-<kid>.der` (mode 0600, written
/// to a temporary file, synced and renamed so a crash never leaves half a key).
/// Returns its kid. Load the directory again to start signing with it.
pub fn generate_key(dir: &Path, alg: SigningAlg, now: i64) -> Result<String, KeyError> {
    ensure_dir(dir)?;
    let (entry, der) = match alg {
        SigningAlg::RS256 => {
            let mut s = JwsRs256Signer::generate_rs256()
                .map_err(|e| KeyError::Sign(format!("RSA key generation: {e:?}")))?;
            let der = s
                .private_key_to_der()
                .map_err(|e| KeyError::Sign(format!("{e:?}")))?;
            (KeyEntry::from_rs(&mut s, now, dir)?, der)
        }
        SigningAlg::ES256 => {
            let mut s = JwsEs256Signer::generate_es256()
                .map_err(|e| KeyError::Sign(format!("EC key generation: {e:?}")))?;
            let der = s
                .private_key_to_der()
                .map_err(|e| KeyError::Sign(format!("{e:?}")))?;
            (KeyEntry::from_es(&mut s, now)?, der)
        }
    };
    let path = dir.join(format!("{}-{now}-{}.der", alg.file_prefix(), entry.kid));
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".key-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(&der).map_err(io(&path))?;
    tmp.as_file().sync_all().map_err(io(&path))?;
    tmp.persist_noclobber(&path)
        .map_err(|e| io(&path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(entry.kid)
}

impl SigningKeys {
    /// Loads every key in `dir`, generating an RS256 and an ES256 key when none exists
    /// for that algorithm (first start). Creates `dir` with mode 0700 if needed.
    pub fn load_or_generate(dir: &Path) -> Result<SigningKeys, KeyError> {
        Self::load_or_generate_at(dir, now_unix())
    }

    /// As [`Self::load_or_generate`], with the clock injected (`now` names new keys).
    pub fn load_or_generate_at(dir: &Path, now: i64) -> Result<SigningKeys, KeyError> {
        ensure_dir(dir)?;
        // Serialise first-start generation between the daemon and `halos-authctl provision`.
        let lock_path = dir.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _guard = lock.write().map_err(io(&lock_path))?;

        let mut keys = Self::load_dir(dir)?;
        for alg in SigningAlg::ALL {
            if !keys.iter().any(|k| k.alg == alg) {
                generate_key(dir, alg, now)?;
                keys = Self::load_dir(dir)?;
            }
        }
        Ok(Self::from_entries(keys))
    }

    /// Loads the keys in `dir` without generating any (e.g. for `halos-authctl check`).
    pub fn load(dir: &Path) -> Result<SigningKeys, KeyError> {
        let keys = Self::load_dir(dir)?;
        for alg in SigningAlg::ALL {
            if !keys.iter().any(|k| k.alg == alg) {
                return Err(KeyError::NoKey(alg.as_str()));
            }
        }
        Ok(Self::from_entries(keys))
    }

    fn load_dir(dir: &Path) -> Result<Vec<KeyEntry>, KeyError> {
        let mut keys = Vec::new();
        let mut names = BTreeSet::new();
        for ent in fs::read_dir(dir).map_err(io(dir))? {
            let ent = ent.map_err(io(dir))?;
            if let Some(name) = ent.file_name().to_str() {
                names.insert(name.to_string());
            }
        }
        for name in names {
            let Some((alg, created, named_kid)) = parse_file_name(&name) else {
                if name.ends_with(".der") {
                    tracing::warn!(file = %dir.join(&name).display(), "ignoring key file with an unexpected name");
                }
                continue;
            };
            let path = dir.join(&name);
            let der = read_key_file(&path)?;
            let entry = KeyEntry::from_der(alg, &der, created, &path)?;
            if entry.kid != named_kid {
                return Err(KeyError::KidMismatch {
                    path,
                    named: named_kid.to_string(),
                    actual: entry.kid,
                });
            }
            keys.push(entry);
        }
        Ok(keys)
    }

    fn from_entries(mut keys: Vec<KeyEntry>) -> Self {
        keys.sort_by(|a, b| {
            a.alg
                .cmp(&b.alg)
                .then(b.created.cmp(&a.created))
                .then(a.kid.cmp(&b.kid))
        });
        keys.dedup_by(|a, b| a.kid == b.kid);
        Self { keys }
    }

    fn signing_entry(&self, alg: SigningAlg) -> Result<&KeyEntry, KeyError> {
        self.keys
            .iter()
            .find(|k| k.alg == alg)
            .ok_or(KeyError::NoKey(alg.as_str()))
    }

    /// The kid that signs new tokens for `alg`.
    pub fn signing_kid(&self, alg: SigningAlg) -> Option<&str> {
        self.signing_entry(alg).ok().map(|k| k.kid.as_str())
    }

    /// Every published key: `(alg, kid, created)`, signing keys first per algorithm.
    pub fn kids(&self) -> Vec<(SigningAlg, &str, i64)> {
        self.keys
            .iter()
            .map(|k| (k.alg, k.kid.as_str(), k.created))
            .collect()
    }

    /// The JWK Set served at `jwks_uri`: public members only, each with `kid`, `use` and
    /// `alg` (conformance CC-02, CC-04, CC-05).
    pub fn jwks_json(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Signs `claims` as a compact JWS with the newest key of `alg`; the header carries
    /// `alg`, `kid` and `typ: JWT`.
    pub fn sign_id_token<T: Serialize>(
        &self,
        alg: SigningAlg,
        claims: &T,
    ) -> Result<String, KeyError> {
        let entry = self.signing_entry(alg)?;
        let jws = JwsBuilder::into_json(claims)
            .map_err(|e| KeyError::Sign(e.to_string()))?
            .set_typ(Some("JWT"))
            .build();
        let signed = match &entry.signer {
            Signer::Rs(s) => s.sign(&jws),
            Signer::Es(s) => s.sign(&jws),
        }
        .map_err(|e| KeyError::Sign(format!("{e:?}")))?;
        Ok(signed.to_string())
    }

    /// Verifies a JWS that we signed (an `id_token_hint`) and returns its claims. The
    /// algorithm is fixed per key: the header's `alg` must be RS256 or ES256 and `kid` must
    /// name one of our keys of that algorithm. `none` and HS256 are refused, `jku`, `jwk`,
    /// `x5u` and `x5c` are ignored, and `kid` is only ever compared with our own kids.
    /// Expiry is not checked: RP-Initiated Logout accepts expired hints.
    pub fn verify_own_token(&self, token: &str) -> Result<Map<String, Value>, TokenVerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenVerifyError::TooLong);
        }
        // compact_jwt knows only ES256, RS256 and HS256: any other `alg` (`none` included)
        // fails to parse here.
        let jwsc = JwsCompact::from_str(token).map_err(|_| TokenVerifyError::Malformed)?;
        let alg = match jwsc.header().alg {
            JwaAlg::RS256 => SigningAlg::RS256,
            JwaAlg::ES256 => SigningAlg::ES256,
            other => return Err(TokenVerifyError::UnsupportedAlg(format!("{other:?}"))),
        };
        let kid = jwsc
            .header()
            .kid
            .as_deref()
            .ok_or(TokenVerifyError::MissingKid)?;
        let entry = self
            .keys
            .iter()
            .find(|k| k.alg == alg && k.kid == kid)
            .ok_or(TokenVerifyError::UnknownKid)?;
        let jws = match &entry.verifier {
            Verifier::Rs(v) => v.verify(&jwsc),
            Verifier::Es(v) => v.verify(&jwsc),
        }
        .map_err(|_| TokenVerifyError::BadSignature)?;
        match serde_json::from_slice::<Value>(jws.payload()) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(TokenVerifyError::Malformed),
        }
    }

    /// Verifies an `id_token_hint` (OIDC Core §3.1.2.1, RP-Initiated Logout §2): our
    /// signature, `iss` equal to `issuer`, a `sub` and an `aud`. An expired hint is valid.
    pub fn verify_id_token_hint(
        &self,
        token: &str,
        issuer: &Issuer,
    ) -> Result<IdTokenHint, TokenVerifyError> {
        let claims = self.verify_own_token(token)?;
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(TokenVerifyError::WrongIssuer);
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(TokenVerifyError::BadClaim("sub"))?
            .to_string();
        let aud = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .ok_or(TokenVerifyError::BadClaim("aud"))?,
            _ => return Err(TokenVerifyError::BadClaim("aud")),
        };
        Ok(IdTokenHint {
            sub,
            aud,
            auth_time: claims.get("auth_time").and_then(Value::as_i64),
            exp: claims.get("exp").and_then(Value::as_i64),
        })
    }
}

/// What an accepted `id_token_hint` tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    pub sub: String,
    /// The client(s) the token was issued to.
    pub aud: Vec<String>,
    pub auth_time: Option<i64>,
    pub exp: Option<i64>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::OnceLock;

    use compact_jwt::JwkKeySet;
    use hmac::{KeyInit, Mac};

    use super::*;

    const T0: i64 = 1_767_225_600;

    /// Key generation (RSA especially) is slow; generate once and copy the files into a
    /// fresh directory for each test that needs one.
    fn fixture_files() -> &'static Vec<(String, Vec<u8>)> {
        static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
        FILES.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            SigningKeys::load_or_generate_at(dir.path(), T0).unwrap();
            let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".der"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        })
    }

    fn fixture_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        DirBuilder::new().mode(0o700).create(&keys).unwrap();
        for (name, der) in fixture_files() {
            let p = keys.join(name);
            fs::write(&p, der).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        dir
    }

    fn fixture() -> &'static SigningKeys {
        static KEYS: OnceLock<SigningKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let d = fixture_dir();
            SigningKeys::load(&d.path().join("keys")).unwrap()
        })
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn b64j(v: &Value) -> String {
        b64(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn first_start_generates_private_files_and_reload_keeps_kids() {
        let files = fixture_files();
        assert_eq!(files.len(), 2, "{files:?}");
        // fixture_files generated them in a fresh dir; regenerate here to check modes.
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state").join("keys");
        let first = SigningKeys::load_or_generate_at(&dir, T0).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let names: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "der"))
            .collect();
        assert_eq!(names.len(), 2);
        for p in &names {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        let rs_kid = first.signing_kid(SigningAlg::RS256).unwrap().to_string();
        let es_kid = first.signing_kid(SigningAlg::ES256).unwrap().to_string();
        assert!(names.iter().any(
            |p| p.file_name().unwrap().to_string_lossy() == format!("rs256-{T0}-{rs_kid}.der")
        ));
        assert!(names.iter().any(
            |p| p.file_name().unwrap().to_string_lossy() == format!("es256-{T0}-{es_kid}.der")
        ));

        let again = SigningKeys::load_or_generate_at(&dir, T0 + 100).unwrap();
        assert_eq!(again.signing_kid(SigningAlg::RS256), Some(rs_kid.as_str()));
        assert_eq!(again.signing_kid(SigningAlg::ES256), Some(es_kid.as_str()));
        assert_eq!(again.jwks_json(), first.jwks_json());
        let count = fs::read_dir(&dir).unwrap().count();
        assert_eq!(count, 3, "two keys and the lock file, nothing new");
    }

    #[test]
    fn missing_algorithm_is_generated_and_load_without_generate_refuses() {
        let d = fixture_dir();
        let keys = d.path().join("keys");
        let es = fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("es256-")
            })
            .unwrap();
        fs::remove_file(&es).unwrap();
        assert!(matches!(
            SigningKeys::load(&keys),
            Err(KeyError::NoKey("ES256"))
        ));
        let k = SigningKeys::load_or_generate_at(&keys, T0 + 5).unwrap();
        assert_eq!(k.kids().len(), 2);
        assert_eq!(k.kids()[1].2, T0 + 5);
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let d = fixture_dir();
        let keys = d.path().join("keys");
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o755)).unwrap();
        for e in fs::read_dir(&keys).unwrap() {
            fs::set_permissions(e.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
        }
        SigningKeys::load_or_generate_at(&keys, T0).unwrap();
        assert_eq!(mode(&keys), 0o700);
        for e in fs::read_dir(&keys).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "der") {
                assert_eq!(mode(&p), 0o600);
            }
        }
    }

    #[test]
    fn corrupt_renamed_and_symlinked_keys_are_refused() {
        let d = fixture_dir();
        let keys = d.path().join("keys");
        let (rs_name, rs_der) = fixture_files()
            .iter()
            .find(|(n, _)| n.starts_with("rs256-"))
            .unwrap();

        // Renamed so the kid in the name no longer matches.
        let wrong = keys.join(format!("rs256-{T0}-AAAA.der"));
        fs::rename(keys.join(rs_name), &wrong).unwrap();
        assert!(matches!(
            SigningKeys::load(&keys),
            Err(KeyError::KidMismatch { .. })
        ));
        fs::remove_file(&wrong).unwrap();

        // Truncated DER.
        let p = keys.join(rs_name);
        fs::write(&p, &rs_der[..100]).unwrap();
        assert!(matches!(
            SigningKeys::load(&keys),
            Err(KeyError::Corrupt(_))
        ));

        // An ES key in an RS file.
        let (_, es_der) = fixture_files()
            .iter()
            .find(|(n, _)| n.starts_with("es256-"))
            .unwrap();
        fs::write(&p, es_der).unwrap();
        assert!(matches!(
            SigningKeys::load(&keys),
            Err(KeyError::Corrupt(_))
        ));

        // A symlink.
        fs::remove_file(&p).unwrap();
        let outside = d.path().join("elsewhere.der");
        fs::write(&outside, rs_der).unwrap();
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        assert!(matches!(
            SigningKeys::load(&keys),
            Err(KeyError::Symlink(_))
        ));

        // Unrelated files and temp files are ignored.
        fs::remove_file(&p).unwrap();
        fs::write(&p, rs_der).unwrap();
        fs::write(keys.join(".key-abc.tmp"), b"junk").unwrap();
        fs::write(keys.join("README"), b"junk").unwrap();
        fs::write(keys.join("rs256-notanumber-x.der"), b"junk").unwrap();
        assert_eq!(SigningKeys::load(&keys).unwrap().kids().len(), 2);
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(
            parse_file_name("rs256-17-ab_c-D.der"),
            Some((SigningAlg::RS256, 17, "ab_c-D"))
        );
        assert_eq!(
            parse_file_name("es256-0-k.der"),
            Some((SigningAlg::ES256, 0, "k"))
        );
        for bad in [
            "rs256-17-.der",
            "rs256--k.der",
            "rs256-1x-k.der",
            "hs256-1-k.der",
            "rs256-1-k.pem",
            "rs256-1-../k.der",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn jwks_publishes_public_members_only_with_thumbprint_kids() {
        let jwks = fixture().jwks_json();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let mut kids = HashSet::new();
        for k in keys {
            let o = k.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
                assert!(!o.contains_key(private), "{private} in {k}");
            }
            assert_eq!(k["use"], "sig");
            let kid = k["kid"].as_str().unwrap();
            assert!(kids.insert(kid.to_string()), "duplicate kid");
            let canonical = match k["kty"].as_str().unwrap() {
                "RSA" => {
                    assert_eq!(k["alg"], "RS256");
                    assert_eq!(k["e"], "AQAB");
                    let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
                    assert!(n.len() * 8 >= MIN_RSA_BITS && n[0] != 0);
                    format!(
                        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                        k["e"].as_str().unwrap(),
                        k["n"].as_str().unwrap()
                    )
                }
                "EC" => {
                    assert_eq!(k["alg"], "ES256");
                    assert_eq!(k["crv"], "P-256");
                    format!(
                        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                        k["x"].as_str().unwrap(),
                        k["y"].as_str().unwrap()
                    )
                }
                other => panic!("unexpected kty {other}"),
            };
            let digest = Sha256::digest(canonical.as_bytes());
            assert_eq!(kid, URL_SAFE_NO_PAD.encode(digest), "RFC 7638 thumbprint");
        }
        // compact_jwt parses it as a JWK Set.
        let set: JwkKeySet = serde_json::from_value(jwks).unwrap();
        assert_eq!(set.keys.len(), 2);
    }

    fn verify_with_jwks(jwks: &Value, token: &str) -> Value {
        let set: JwkKeySet = serde_json::from_value(jwks.clone()).unwrap();
        let jwsc = JwsCompact::from_str(token).unwrap();
        let kid = jwsc.header().kid.clone().unwrap();
        let jwk = set
            .keys
            .iter()
            .find(|k| match k {
                compact_jwt::Jwk::RSA { kid: Some(k), .. }
                | compact_jwt::Jwk::EC { kid: Some(k), .. } => *k == kid,
                _ => false,
            })
            .expect("kid published");
        let jws = match jwsc.header().alg {
            JwaAlg::RS256 => JwsRs256Verifier::try_from(jwk).unwrap().verify(&jwsc),
            JwaAlg::ES256 => JwsEs256Verifier::try_from(jwk).unwrap().verify(&jwsc),
            JwaAlg::HS256 => panic!("HS256"),
        }
        .expect("signature verifies with the published JWK");
        serde_json::from_slice(jws.payload()).unwrap()
    }

    fn header_of(token: &str) -> Value {
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
    }

    #[test]
    fn id_tokens_verify_against_the_published_jwks() {
        let keys = fixture();
        let claims =
            json!({"iss": "https://h/sso", "sub": "u1", "aud": "c", "exp": T0 + 60, "iat": T0});
        for alg in SigningAlg::ALL {
            let t = keys.sign_id_token(alg, &claims).unwrap();
            let h = header_of(&t);
            assert_eq!(h["alg"], alg.as_str());
            assert_eq!(h["typ"], "JWT");
            assert_eq!(h["kid"], keys.signing_kid(alg).unwrap());
            assert_eq!(verify_with_jwks(&keys.jwks_json(), &t), claims);
            assert_eq!(Value::Object(keys.verify_own_token(&t).unwrap()), claims);
        }
    }

    #[test]
    fn rotation_publishes_all_and_newest_signs() {
        let d = fixture_dir();
        let dir = d.path().join("keys");
        let before = SigningKeys::load(&dir).unwrap();
        let claims = json!({"iss": "https://h/sso", "sub": "u1", "aud": "c"});
        let old_token = before.sign_id_token(SigningAlg::RS256, &claims).unwrap();
        let old_kid = before.signing_kid(SigningAlg::RS256).unwrap().to_string();

        let new_kid = generate_key(&dir, SigningAlg::RS256, T0 + 10).unwrap();
        // An older key written later (clock skew, restore) does not take over.
        let older_es = generate_key(&dir, SigningAlg::ES256, T0 - 10).unwrap();
        let after = SigningKeys::load(&dir).unwrap();

        assert_eq!(after.kids().len(), 4);
        assert_eq!(after.signing_kid(SigningAlg::RS256), Some(new_kid.as_str()));
        assert_ne!(new_kid, old_kid);
        assert_ne!(
            after.signing_kid(SigningAlg::ES256),
            Some(older_es.as_str())
        );
        let jwks = after.jwks_json();
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert!(published.contains(&old_kid.as_str()) && published.contains(&new_kid.as_str()));
        assert!(published.contains(&older_es.as_str()));

        // Tokens signed by the previous key still verify; new ones use the new kid.
        assert!(after.verify_own_token(&old_token).is_ok());
        let t = after.sign_id_token(SigningAlg::RS256, &claims).unwrap();
        assert_eq!(header_of(&t)["kid"], new_kid.as_str());
        assert_eq!(verify_with_jwks(&jwks, &t), claims);
    }

    fn forge(header: &Value, payload: &Value, sig: &[u8]) -> String {
        format!("{}.{}.{}", b64j(header), b64j(payload), b64(sig))
    }

    fn hs256(header: &Value, payload: &Value, key: &[u8]) -> String {
        let input = format!("{}.{}", b64j(header), b64j(payload));
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let keys = fixture();
        let rs_kid = keys.signing_kid(SigningAlg::RS256).unwrap();
        let es_kid = keys.signing_kid(SigningAlg::ES256).unwrap();
        let payload = json!({"iss": "https://h/sso", "sub": "alice", "aud": "app1"});
        let good = keys.sign_id_token(SigningAlg::RS256, &payload).unwrap();
        assert!(keys.verify_own_token(&good).is_ok());

        // alg: none, with and without a signature part.
        let none = json!({"alg": "none", "kid": rs_kid});
        assert_eq!(
            keys.verify_own_token(&forge(&none, &payload, b"")),
            Err(TokenVerifyError::Malformed)
        );
        let unsigned = format!("{}.{}", b64j(&none), b64j(&payload));
        assert_eq!(
            keys.verify_own_token(&unsigned),
            Err(TokenVerifyError::Malformed)
        );
        let none_caps = json!({"alg": "NONE", "kid": rs_kid});
        assert_eq!(
            keys.verify_own_token(&forge(&none_caps, &payload, b"")),
            Err(TokenVerifyError::Malformed)
        );
        // Our own token's header rewritten to alg none (RPL-04).
        let mut parts = good.split('.');
        let mut h = header_of(&good);
        h["alg"] = json!("none");
        let body = parts.nth(1).unwrap();
        let rewritten = format!("{}.{body}.", b64j(&h));
        assert_eq!(
            keys.verify_own_token(&rewritten),
            Err(TokenVerifyError::Malformed)
        );

        // HS256 keyed with our public key (JWK text, modulus bytes, JWKS text).
        let hs = json!({"alg": "HS256", "typ": "JWT", "kid": rs_kid});
        let jwks = keys.jwks_json();
        let rsa_jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kty"] == "RSA")
            .unwrap();
        let n = URL_SAFE_NO_PAD
            .decode(rsa_jwk["n"].as_str().unwrap())
            .unwrap();
        for key in [
            serde_json::to_vec(rsa_jwk).unwrap(),
            n,
            serde_json::to_vec(&jwks).unwrap(),
        ] {
            assert_eq!(
                keys.verify_own_token(&hs256(&hs, &payload, &key)),
                Err(TokenVerifyError::UnsupportedAlg("HS256".into()))
            );
        }

        // Unknown, missing and path-like kids.
        for kid in ["unknown", "../../etc/passwd", ""] {
            let h = json!({"alg": "RS256", "kid": kid});
            assert_eq!(
                keys.verify_own_token(&forge(&h, &payload, &[0u8; 256])),
                Err(TokenVerifyError::UnknownKid),
                "{kid}"
            );
        }
        let h = json!({"alg": "RS256"});
        assert_eq!(
            keys.verify_own_token(&forge(&h, &payload, &[0u8; 256])),
            Err(TokenVerifyError::MissingKid)
        );

        // The ES256 kid with an RS256 header, and the RS256 kid with an ES256 header.
        let h = json!({"alg": "RS256", "kid": es_kid});
        assert_eq!(
            keys.verify_own_token(&forge(&h, &payload, &[0u8; 256])),
            Err(TokenVerifyError::UnknownKid)
        );
        let h = json!({"alg": "ES256", "kid": rs_kid});
        assert_eq!(
            keys.verify_own_token(&forge(&h, &payload, &[0u8; 64])),
            Err(TokenVerifyError::UnknownKid)
        );

        // A foreign key that claims our kid (RPL-11): bad signature.
        let mut foreign = JwsEs256Signer::generate_es256().unwrap();
        foreign.set_kid(es_kid);
        let jws = JwsBuilder::into_json(&payload).unwrap().build();
        let t = foreign.sign(&jws).unwrap().to_string();
        assert_eq!(
            keys.verify_own_token(&t),
            Err(TokenVerifyError::BadSignature)
        );
        // A foreign key with its own kid: unknown.
        let foreign = JwsEs256Signer::generate_es256().unwrap();
        let t = foreign.sign(&jws).unwrap().to_string();
        assert_eq!(keys.verify_own_token(&t), Err(TokenVerifyError::UnknownKid));

        // A modified payload under our genuine signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = b64j(&json!({"iss": "https://h/sso", "sub": "admin", "aud": "app1"}));
        parts[1] = &evil;
        assert_eq!(
            keys.verify_own_token(&parts.join(".")),
            Err(TokenVerifyError::BadSignature)
        );

        // Garbage and oversized input.
        assert_eq!(
            keys.verify_own_token("a.b"),
            Err(TokenVerifyError::Malformed)
        );
        assert_eq!(keys.verify_own_token(""), Err(TokenVerifyError::Malformed));
        assert_eq!(
            keys.verify_own_token(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenVerifyError::TooLong)
        );
    }

    #[test]
    fn id_token_hint_checks_issuer_and_claims() {
        let keys = fixture();
        let iss = Issuer::parse("https://h/sso").unwrap();
        let expired =
            json!({"iss": "https://h/sso", "sub": "s1", "aud": "app1", "exp": 1, "auth_time": 5});
        let t = keys.sign_id_token(SigningAlg::ES256, &expired).unwrap();
        let hint = keys.verify_id_token_hint(&t, &iss).unwrap();
        assert_eq!(
            hint,
            IdTokenHint {
                sub: "s1".into(),
                aud: vec!["app1".into()],
                auth_time: Some(5),
                exp: Some(1)
            }
        );
        let arr = json!({"iss": "https://h/sso", "sub": "s1", "aud": ["a", "b"]});
        let t = keys.sign_id_token(SigningAlg::RS256, &arr).unwrap();
        assert_eq!(
            keys.verify_id_token_hint(&t, &iss).unwrap().aud,
            vec!["a", "b"]
        );

        let other_iss = json!({"iss": "https://h/sso/", "sub": "s1", "aud": "a"});
        let t = keys.sign_id_token(SigningAlg::RS256, &other_iss).unwrap();
        assert_eq!(
            keys.verify_id_token_hint(&t, &iss),
            Err(TokenVerifyError::WrongIssuer)
        );
        let no_sub = json!({"iss": "https://h/sso", "aud": "a"});
        let t = keys.sign_id_token(SigningAlg::RS256, &no_sub).unwrap();
        assert_eq!(
            keys.verify_id_token_hint(&t, &iss),
            Err(TokenVerifyError::BadClaim("sub"))
        );
        let bad_aud = json!({"iss": "https://h/sso", "sub": "s", "aud": [1]});
        let t = keys.sign_id_token(SigningAlg::RS256, &bad_aud).unwrap();
        assert_eq!(
            keys.verify_id_token_hint(&t, &iss),
            Err(TokenVerifyError::BadClaim("aud"))
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let s = format!("{:?}", fixture());
        assert!(s.contains("RS256") && s.contains("ES256"));
        assert!(s.len() < 300, "{s}");
    }
}
