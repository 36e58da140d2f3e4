//! OIDC clients: validation of `OidcClientConfig` (authd.yml `identity_providers.oidc.clients`
//! and snippet files, DESIGN §8) into [`OidcClient`], and the immutable [`ClientRegistry`].
//!
//! Defaults (DESIGN §8, HaLOS's merge script): `client_name` = id, scopes
//! `[openid, profile, email]`, `consent_mode: implicit`, `token_endpoint_auth_method:
//! client_secret_post`, confidential, `authorization_policy: one_factor`, ID tokens RS256.
//! `grant_types` defaults to `[authorization_code, refresh_token]`: a refresh token is
//! still only issued when the client is allowed the `offline_access` scope *and* asks for
//! it (DESIGN §9), so adding `offline_access` to `scopes` is the one switch. (Authelia
//! needs both `refresh_token` in `grant_types` and the scope; a configuration that lists
//! `grant_types` without `refresh_token` but allows `offline_access` is refused, as there.)
//!
//! Redirect URIs are compared byte for byte, with no normalisation (RFC 9700 §2.1,
//! OIDC Core §3.1.2.1). Secrets: a plaintext (from `client_secret` or the file named by
//! `client_secret_file`) is kept only as its SHA-256 and compared in constant time; a
//! `$pbkdf2-sha512$…`, `$argon2id$…` (or any other format of the users file) digest is
//! verified with [`PasswordDigest`]. No secret ever appears in `Debug` output.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::Block;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::keys::SigningAlg;
use super::scope::{Scope, Scopes};
use crate::config::{OidcClientConfig, Policy};
use crate::secret::Secret;
use crate::users::hash::{DigestError, PasswordDigest};

/// Authelia's default for remembered consent.
pub const DEFAULT_PRE_CONFIGURED_CONSENT: Duration = Duration::from_secs(7 * 86_400);
/// Longest accepted `client_id` (Authelia's limit).
pub const MAX_CLIENT_ID_LEN: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::ClientSecretBasic, Self::ClientSecretPost, Self::None]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentMode {
    /// No consent page (HaLOS's choice for its own apps).
    Implicit,
    /// Ask every time.
    Explicit,
    /// Ask, and remember an approval of the same scopes for `duration`.
    PreConfigured { duration: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::AuthorizationCode, Self::RefreshToken]
            .into_iter()
            .find(|g| g.as_str() == s)
    }
}

/// What is wrong with a redirect URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriProblem {
    NotAbsolute,
    Scheme,
    NoHost,
    Fragment,
    UserInfo,
    Wildcard,
    Whitespace,
    Unexpanded,
}

impl fmt::Display for UriProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "not an absolute URL",
            Self::Scheme => "scheme must be https or http",
            Self::NoHost => "has no host",
            Self::Fragment => "must not contain a fragment (#)",
            Self::UserInfo => "must not contain user information (user@)",
            Self::Wildcard => "wildcards are not supported; list every URI exactly",
            Self::Whitespace => "contains whitespace or control characters",
            Self::Unexpanded => "contains an unexpanded ${…} variable",
        })
    }
}

/// One problem with a client definition. [`ClientConfigError::field`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientConfigError {
    #[error("client_id: {0}")]
    ClientId(&'static str),
    #[error("client_name: must not contain control characters")]
    ClientName,
    #[error(
        "client_secret: a confidential client needs client_secret or client_secret_file (or set public: true)"
    )]
    MissingSecret,
    #[error("client_secret: a public client must not have a secret")]
    SecretOnPublicClient,
    #[error("client_secret: set either client_secret or client_secret_file, not both")]
    SecretAndFile,
    #[error("client_secret: must not be empty")]
    EmptySecret,
    #[error("client_secret: {0}")]
    SecretDigest(DigestError),
    #[error("client_secret_file: {path}: {reason}")]
    SecretFile { path: PathBuf, reason: String },
    #[error("redirect_uris: at least one redirect URI is required")]
    NoRedirectUris,
    #[error("{field}: {uri:?}: {problem}")]
    RedirectUri {
        field: &'static str,
        uri: String,
        problem: UriProblem,
    },
    #[error(
        "scopes: unknown scope {0:?} (supported: openid, offline_access, profile, email, groups)"
    )]
    UnknownScope(String),
    #[error("scopes: must include openid")]
    MissingOpenid,
    #[error("scopes: offline_access needs the refresh_token grant type")]
    OfflineAccessWithoutRefreshGrant,
    #[error("consent_mode: {0:?} is not implicit, explicit, pre-configured or auto")]
    ConsentMode(String),
    #[error(
        "token_endpoint_auth_method: {0:?} is not client_secret_basic, client_secret_post or none"
    )]
    AuthMethod(String),
    #[error("token_endpoint_auth_method: a public client authenticates with none, not {0}")]
    PublicClientAuthMethod(String),
    #[error("public: token_endpoint_auth_method none is for public clients (public: true)")]
    NoneMethodOnConfidentialClient,
    #[error("require_pkce: a public client always requires PKCE")]
    PublicClientWithoutPkce,
    #[error("grant_types: {0:?} is not supported (authorization_code, refresh_token)")]
    GrantType(String),
    #[error("grant_types: must include authorization_code")]
    NoAuthorizationCodeGrant,
    #[error("response_types: {0:?} is not supported (only code)")]
    ResponseType(String),
    #[error("allowed_groups: {0:?} is not a valid group name")]
    AllowedGroup(String),
    #[error("authorization_policy: {0:?} is not one_factor or two_factor")]
    Policy(String),
    #[error("id_token_signed_response_alg: {0:?} is not RS256 or ES256")]
    IdTokenAlg(String),
    #[error("userinfo_signed_response_alg: {0:?} is not supported (userinfo is plain JSON: none)")]
    UserinfoAlg(String),
}

impl ClientConfigError {
    /// The configuration key the problem is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::ClientId(_) => "client_id",
            Self::ClientName => "client_name",
            Self::MissingSecret
            | Self::SecretOnPublicClient
            | Self::SecretAndFile
            | Self::EmptySecret
            | Self::SecretDigest(_) => "client_secret",
            Self::SecretFile { .. } => "client_secret_file",
            Self::NoRedirectUris => "redirect_uris",
            Self::RedirectUri { field, .. } => field,
            Self::UnknownScope(_)
            | Self::MissingOpenid
            | Self::OfflineAccessWithoutRefreshGrant => "scopes",
            Self::ConsentMode(_) => "consent_mode",
            Self::AuthMethod(_) | Self::PublicClientAuthMethod(_) => "token_endpoint_auth_method",
            Self::NoneMethodOnConfidentialClient => "public",
            Self::PublicClientWithoutPkce => "require_pkce",
            Self::GrantType(_) | Self::NoAuthorizationCodeGrant => "grant_types",
            Self::ResponseType(_) => "response_types",
            Self::AllowedGroup(_) => "allowed_groups",
            Self::Policy(_) => "authorization_policy",
            Self::IdTokenAlg(_) => "id_token_signed_response_alg",
            Self::UserinfoAlg(_) => "userinfo_signed_response_alg",
        }
    }
}

/// Every problem found in one client definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientErrors(pub Vec<ClientConfigError>);

impl fmt::Display for ClientErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ClientErrors {}

/// How a client proves who it is. Plaintext is kept only as its SHA-256.
#[derive(Clone)]
enum ClientSecret {
    Plain([u8; 32]),
    Digest(Arc<PasswordDigest>),
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("ClientSecret(plaintext, ***)"),
            Self::Digest(d) => write!(f, "ClientSecret({}, ***)", d.algorithm_name()),
        }
    }
}

/// A validated client.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub id: String,
    pub name: String,
    /// Where it was defined (snippet path or `authd.yml`), for messages.
    pub source: String,
    secret: Option<ClientSecret>,
    pub public: bool,
    pub auth_method: TokenAuthMethod,
    /// Exactly as configured; compared byte for byte.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes this client may be granted.
    pub scopes: Scopes,
    pub consent_mode: ConsentMode,
    /// PKCE (S256) required at the authorization endpoint. Always true for public clients.
    pub require_pkce: bool,
    pub grant_types: Vec<GrantType>,
    /// Empty = every user; otherwise the user must be in one of these groups.
    pub allowed_groups: Vec<String>,
    /// `OneFactor` or `TwoFactor`.
    pub authorization_policy: Policy,
    pub id_token_alg: SigningAlg,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Checks a redirect (or post-logout redirect) URI for registration.
pub fn check_redirect_uri(raw: &str) -> Result<(), UriProblem> {
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UriProblem::Whitespace);
    }
    if raw.contains("${") {
        return Err(UriProblem::Unexpanded);
    }
    if raw.contains('*') {
        return Err(UriProblem::Wildcard);
    }
    if raw.contains('#') {
        return Err(UriProblem::Fragment);
    }
    let url = url::Url::parse(raw).map_err(|_| UriProblem::NotAbsolute)?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UriProblem::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UriProblem::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriProblem::UserInfo);
    }
    Ok(())
}

fn valid_group(g: &str) -> bool {
    !g.is_empty() && !g.contains(',') && !g.chars().any(char::is_control)
}

/// Reads a `client_secret_file`: the whole content with trailing newlines removed (as
/// HaLOS's `$(cat file)` did). At most 64 KiB are read.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking open: a FIFO (or device) at the path must not hang the reload.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut s = String::new();
    f.take(64 * 1024).read_to_string(&mut s)?;
    let trimmed = s.trim_end_matches(['\n', '\r']).to_string();
    Ok(Secret::new(trimmed))
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl OidcClient {
    /// Validates `cfg`. `read_secret_file` reads a `client_secret_file` (production:
    /// [`read_secret_file`]); it is only called for confidential clients that name one.
    pub fn from_config(
        source: &str,
        cfg: &OidcClientConfig,
        read_secret_file: &mut dyn FnMut(&Path) -> std::io::Result<Secret>,
    ) -> Result<OidcClient, ClientErrors> {
        let mut errs = Vec::new();

        // client_id: RFC 3986 unreserved characters, as Authelia requires.
        let id = cfg.client_id.clone();
        if id.is_empty() {
            errs.push(ClientConfigError::ClientId("must not be empty"));
        } else if id.len() > MAX_CLIENT_ID_LEN {
            errs.push(ClientConfigError::ClientId("longer than 100 characters"));
        } else if !id.bytes().all(unreserved) {
            errs.push(ClientConfigError::ClientId(
                "only letters, digits and - . _ ~ are allowed",
            ));
        }
        let name = cfg.client_name.clone().unwrap_or_else(|| id.clone());
        if name.chars().any(char::is_control) {
            errs.push(ClientConfigError::ClientName);
        }

        // public / token_endpoint_auth_method / require_pkce
        let method = match cfg.token_endpoint_auth_method.as_deref() {
            None => None,
            Some(m) => match TokenAuthMethod::parse(m) {
                Some(m) => Some(m),
                None => {
                    errs.push(ClientConfigError::AuthMethod(m.to_string()));
                    None
                }
            },
        };
        let public = cfg.public.unwrap_or(method == Some(TokenAuthMethod::None));
        let auth_method = match (public, method) {
            (true, None | Some(TokenAuthMethod::None)) => TokenAuthMethod::None,
            (true, Some(m)) => {
                errs.push(ClientConfigError::PublicClientAuthMethod(
                    m.as_str().to_string(),
                ));
                m
            }
            (false, Some(TokenAuthMethod::None)) => {
                errs.push(ClientConfigError::NoneMethodOnConfidentialClient);
                TokenAuthMethod::None
            }
            (false, Some(m)) => m,
            (false, None) => TokenAuthMethod::ClientSecretPost,
        };
        if public && cfg.require_pkce == Some(false) {
            errs.push(ClientConfigError::PublicClientWithoutPkce);
        }
        let require_pkce = public || cfg.require_pkce.unwrap_or(false);

        // Secret
        let secret = if public {
            if cfg.client_secret.is_some() || cfg.client_secret_file.is_some() {
                errs.push(ClientConfigError::SecretOnPublicClient);
            }
            None
        } else {
            match (&cfg.client_secret, &cfg.client_secret_file) {
                (Some(_), Some(_)) => {
                    errs.push(ClientConfigError::SecretAndFile);
                    None
                }
                (None, None) => {
                    errs.push(ClientConfigError::MissingSecret);
                    None
                }
                (Some(s), None) => match parse_configured_secret(s.expose()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        errs.push(e);
                        None
                    }
                },
                (None, Some(path)) => {
                    let fail = |reason: String| ClientConfigError::SecretFile {
                        path: path.clone(),
                        reason,
                    };
                    if !path.is_absolute() {
                        errs.push(fail("must be an absolute path".into()));
                        None
                    } else {
                        match read_secret_file(path) {
                            Ok(s) => {
                                // The file holds the plaintext (DESIGN §8), whatever it looks like.
                                let text = s.expose().trim_end_matches(['\n', '\r']);
                                if text.is_empty() {
                                    errs.push(fail("is empty".into()));
                                    None
                                } else {
                                    Some(ClientSecret::Plain(sha256(text)))
                                }
                            }
                            Err(e) => {
                                errs.push(fail(e.to_string()));
                                None
                            }
                        }
                    }
                }
            }
        };

        // Redirect URIs
        let redirect_uris = cfg.redirect_uris.0.clone();
        if redirect_uris.is_empty() {
            errs.push(ClientConfigError::NoRedirectUris);
        }
        for (field, list) in [
            ("redirect_uris", &cfg.redirect_uris.0),
            (
                "post_logout_redirect_uris",
                &cfg.post_logout_redirect_uris.0,
            ),
        ] {
            for uri in list {
                if let Err(problem) = check_redirect_uri(uri) {
                    errs.push(ClientConfigError::RedirectUri {
                        field,
                        uri: uri.clone(),
                        problem,
                    });
                }
            }
        }

        // Grant and response types
        let grant_types = match &cfg.grant_types {
            None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            Some(list) => {
                let mut v = Vec::new();
                for g in &list.0 {
                    match GrantType::parse(g) {
                        Some(g) if !v.contains(&g) => v.push(g),
                        Some(_) => {}
                        None => errs.push(ClientConfigError::GrantType(g.clone())),
                    }
                }
                if !v.contains(&GrantType::AuthorizationCode) {
                    errs.push(ClientConfigError::NoAuthorizationCodeGrant);
                }
                v
            }
        };
        if let Some(list) = &cfg.response_types {
            for r in &list.0 {
                if r != "code" {
                    errs.push(ClientConfigError::ResponseType(r.clone()));
                }
            }
        }

        // Scopes
        let scopes = match &cfg.scopes {
            None => Scopes::empty()
                .with(Scope::Openid)
                .with(Scope::Profile)
                .with(Scope::Email),
            Some(list) => {
                let mut s = Scopes::empty();
                for name in &list.0 {
                    match Scope::parse(name) {
                        Some(sc) => s.insert(sc),
                        None => errs.push(ClientConfigError::UnknownScope(name.clone())),
                    }
                }
                if !s.contains(Scope::Openid) {
                    errs.push(ClientConfigError::MissingOpenid);
                }
                s
            }
        };
        if scopes.contains(Scope::OfflineAccess) && !grant_types.contains(&GrantType::RefreshToken)
        {
            errs.push(ClientConfigError::OfflineAccessWithoutRefreshGrant);
        }

        // Consent
        let remembered = cfg
            .pre_configured_consent_duration
            .map(|d| d.0)
            .unwrap_or(DEFAULT_PRE_CONFIGURED_CONSENT);
        let consent_mode = match cfg.consent_mode.as_deref() {
            None | Some("implicit") => ConsentMode::Implicit,
            Some("explicit") => ConsentMode::Explicit,
            Some("pre-configured") => ConsentMode::PreConfigured {
                duration: remembered,
            },
            // Authelia's `auto`: pre-configured when a duration is set, else explicit.
            Some("auto") => match cfg.pre_configured_consent_duration {
                Some(d) => ConsentMode::PreConfigured { duration: d.0 },
                None => ConsentMode::Explicit,
            },
            Some(other) => {
                errs.push(ClientConfigError::ConsentMode(other.to_string()));
                ConsentMode::Implicit
            }
        };

        let allowed_groups = cfg
            .allowed_groups
            .as_ref()
            .map(|g| g.0.clone())
            .unwrap_or_default();
        for g in &allowed_groups {
            if !valid_group(g) {
                errs.push(ClientConfigError::AllowedGroup(g.clone()));
            }
        }

        let authorization_policy = match cfg.authorization_policy.as_deref() {
            None | Some("one_factor") => Policy::OneFactor,
            Some("two_factor") => Policy::TwoFactor,
            Some(other) => {
                errs.push(ClientConfigError::Policy(other.to_string()));
                Policy::OneFactor
            }
        };

        let id_token_alg = match cfg.id_token_signed_response_alg.as_deref() {
            None => SigningAlg::RS256,
            Some(a) => SigningAlg::parse(a).unwrap_or_else(|| {
                errs.push(ClientConfigError::IdTokenAlg(a.to_string()));
                SigningAlg::RS256
            }),
        };
        match cfg.userinfo_signed_response_alg.as_deref() {
            None | Some("none") => {}
            Some(a) => errs.push(ClientConfigError::UserinfoAlg(a.to_string())),
        }

        if !errs.is_empty() {
            return Err(ClientErrors(errs));
        }
        Ok(OidcClient {
            id,
            name,
            source: source.to_string(),
            secret,
            public,
            auth_method,
            redirect_uris,
            post_logout_redirect_uris: cfg.post_logout_redirect_uris.0.clone(),
            scopes,
            consent_mode,
            require_pkce,
            grant_types,
            allowed_groups,
            authorization_policy,
            id_token_alg,
        })
    }

    /// Exact, byte-for-byte match against the registered redirect URIs.
    pub fn redirect_uri_registered(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// Exact match against the registered post-logout redirect URIs.
    pub fn post_logout_redirect_uri_registered(&self, uri: &str) -> bool {
        self.post_logout_redirect_uris.iter().any(|r| r == uri)
    }

    pub fn allows_grant(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }

    /// Whether a user in `groups` may use this client (`allowed_groups`).
    pub fn user_allowed(&self, groups: &[String]) -> bool {
        self.allowed_groups.is_empty() || self.allowed_groups.iter().any(|g| groups.contains(g))
    }

    /// `true` when checking the secret runs a password hash (pbkdf2/argon2…): run it off
    /// the async runtime, with the shared hashing limits.
    pub fn secret_check_is_costly(&self) -> bool {
        matches!(self.secret, Some(ClientSecret::Digest(_)))
    }

    /// Memory the secret check needs, in argon2 blocks (0 unless an argon2 digest).
    pub fn secret_argon2_blocks(&self) -> usize {
        match &self.secret {
            Some(ClientSecret::Digest(d)) => d.argon2_blocks(),
            _ => 0,
        }
    }

    /// Checks a presented client secret. Plaintext secrets: the SHA-256 digests of both
    /// sides are compared in constant time (equal length, so neither the content nor the
    /// length of the stored secret leaks). Public clients have no secret: always `false`.
    pub fn verify_secret(&self, presented: &str, blocks: &mut Vec<Block>) -> bool {
        match &self.secret {
            None => false,
            Some(ClientSecret::Plain(stored)) => sha256(presented).ct_eq(stored).into(),
            Some(ClientSecret::Digest(d)) => d.verify(presented.as_bytes(), blocks),
        }
    }
}

/// `client_secret` in configuration: `$plaintext$…` or any value not starting with `$`
/// is a plaintext (Authelia's rule); anything else starting with `$` must be a digest we
/// can verify (a mistyped digest is an error, never silently a plaintext).
fn parse_configured_secret(s: &str) -> Result<ClientSecret, ClientConfigError> {
    let plain = match s.strip_prefix("$plaintext$") {
        Some(p) => Some(p),
        None if !s.starts_with('$') => Some(s),
        None => None,
    };
    match plain {
        Some("") => Err(ClientConfigError::EmptySecret),
        Some(p) => Ok(ClientSecret::Plain(sha256(p))),
        None => PasswordDigest::parse(s)
            .map(|d| ClientSecret::Digest(Arc::new(d)))
            .map_err(ClientConfigError::SecretDigest),
    }
}

/// Why a client definition is not in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryErrorKind {
    Invalid(ClientErrors),
    /// Another definition (`first_source`) came first with the same `client_id`.
    Duplicate {
        first_source: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub source: String,
    pub client_id: String,
    pub kind: RegistryErrorKind,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RegistryErrorKind::Invalid(e) => {
                write!(f, "{}: client {:?}: {e}", self.source, self.client_id)
            }
            RegistryErrorKind::Duplicate { first_source } => write!(
                f,
                "{}: client {:?} is already defined in {first_source}; skipped",
                self.source, self.client_id
            ),
        }
    }
}

impl std::error::Error for RegistryError {}

/// An immutable snapshot of the valid clients, plus what was skipped and why.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistry {
    clients: HashMap<String, Arc<OidcClient>>,
    errors: Vec<RegistryError>,
}

impl ClientRegistry {
    /// Builds the registry from `(source, config)` pairs in priority order. The first
    /// definition of a `client_id` claims it, valid or not: a later one is reported as a
    /// duplicate and skipped (so a broken file never lets another file's definition take
    /// over its client). Every other client keeps working whatever is wrong elsewhere.
    pub fn build<I>(
        entries: I,
        mut read_secret_file: impl FnMut(&Path) -> std::io::Result<Secret>,
    ) -> ClientRegistry
    where
        I: IntoIterator<Item = (String, OidcClientConfig)>,
    {
        let mut claimed: HashMap<String, String> = HashMap::new();
        let mut clients = HashMap::new();
        let mut errors = Vec::new();
        for (source, cfg) in entries {
            match claimed.entry(cfg.client_id.clone()) {
                Entry::Occupied(first) => {
                    errors.push(RegistryError {
                        source,
                        client_id: cfg.client_id.clone(),
                        kind: RegistryErrorKind::Duplicate {
                            first_source: first.get().clone(),
                        },
                    });
                    continue;
                }
                Entry::Vacant(v) => {
                    v.insert(source.clone());
                }
            }
            match OidcClient::from_config(&source, &cfg, &mut read_secret_file) {
                Ok(c) => {
                    clients.insert(c.id.clone(), Arc::new(c));
                }
                Err(e) => errors.push(RegistryError {
                    source,
                    client_id: cfg.client_id.clone(),
                    kind: RegistryErrorKind::Invalid(e),
                }),
            }
        }
        ClientRegistry { clients, errors }
    }

    pub fn get(&self, client_id: &str) -> Option<&Arc<OidcClient>> {
        self.clients.get(client_id)
    }

    /// Valid clients, sorted by id.
    pub fn clients(&self) -> Vec<&Arc<OidcClient>> {
        let mut v: Vec<_> = self.clients.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Definitions that were skipped, in input order.
    pub fn errors(&self) -> &[RegistryError] {
        &self.errors
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap as Map;

    use super::*;
    use crate::config::OneOrMany;
    use crate::duration::ConfigDuration;

    /// A config with only the required fields.
    pub(crate) fn cfg(id: &str) -> OidcClientConfig {
        OidcClientConfig {
            client_id: id.into(),
            client_name: None,
            client_secret: Some(Secret::new("s3cret")),
            client_secret_file: None,
            redirect_uris: OneOrMany(vec![format!("https://{id}.halos.local/cb")]),
            post_logout_redirect_uris: OneOrMany::default(),
            scopes: None,
            consent_mode: None,
            pre_configured_consent_duration: None,
            token_endpoint_auth_method: None,
            public: None,
            require_pkce: None,
            grant_types: None,
            response_types: None,
            allowed_groups: None,
            authorization_policy: None,
            id_token_signed_response_alg: None,
            userinfo_signed_response_alg: None,
        }
    }

    fn no_files(p: &Path) -> std::io::Result<Secret> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", p.display()),
        ))
    }

    fn build(c: &OidcClientConfig) -> Result<OidcClient, ClientErrors> {
        OidcClient::from_config("test.yml", c, &mut no_files)
    }

    fn errors(c: &OidcClientConfig) -> Vec<ClientConfigError> {
        build(c).unwrap_err().0
    }

    fn list(v: &[&str]) -> OneOrMany {
        OneOrMany(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults_follow_design_section_8() {
        let c = build(&cfg("signalk")).unwrap();
        assert_eq!(c.id, "signalk");
        assert_eq!(c.name, "signalk");
        assert_eq!(c.source, "test.yml");
        assert_eq!(c.scopes.to_string(), "openid profile email");
        assert_eq!(c.consent_mode, ConsentMode::Implicit);
        assert_eq!(c.auth_method, TokenAuthMethod::ClientSecretPost);
        assert!(!c.public);
        assert!(!c.require_pkce);
        assert_eq!(c.authorization_policy, Policy::OneFactor);
        assert_eq!(
            c.grant_types,
            [GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
        assert_eq!(c.id_token_alg, SigningAlg::RS256);
        assert!(c.allowed_groups.is_empty());
        assert!(c.user_allowed(&[]));
        assert!(!c.secret_check_is_costly());
    }

    #[test]
    fn halos_snippet_shape_is_accepted() {
        let mut c = cfg("homarr");
        c.client_name = Some("Homarr Dashboard".into());
        c.client_secret = None;
        c.client_secret_file = Some("/var/lib/x/oidc-secret".into());
        c.redirect_uris = list(&["https://halos.local/api/auth/callback/oidc"]);
        c.scopes = Some(list(&["openid", "profile", "email", "groups"]));
        c.consent_mode = Some("implicit".into());
        c.token_endpoint_auth_method = Some("client_secret_basic".into());
        let mut read = |p: &Path| {
            assert_eq!(p, Path::new("/var/lib/x/oidc-secret"));
            Ok(Secret::new("abc123\n"))
        };
        let client = OidcClient::from_config("homarr.yml", &c, &mut read).unwrap();
        assert_eq!(client.name, "Homarr Dashboard");
        assert_eq!(client.auth_method, TokenAuthMethod::ClientSecretBasic);
        assert_eq!(client.scopes.to_string(), "openid profile email groups");
        let mut blocks = Vec::new();
        // Trailing newline of the file is not part of the secret.
        assert!(client.verify_secret("abc123", &mut blocks));
        assert!(!client.verify_secret("abc123\n", &mut blocks));
    }

    #[test]
    fn public_clients_use_none_and_require_pkce() {
        let mut c = cfg("spa");
        c.client_secret = None;
        c.public = Some(true);
        let client = build(&c).unwrap();
        assert_eq!(client.auth_method, TokenAuthMethod::None);
        assert!(client.public && client.require_pkce);
        assert!(!client.verify_secret("", &mut Vec::new()));

        // `token_endpoint_auth_method: none` alone makes a client public.
        let mut c = cfg("spa2");
        c.client_secret = None;
        c.token_endpoint_auth_method = Some("none".into());
        let client = build(&c).unwrap();
        assert!(client.public && client.require_pkce);

        let mut c = cfg("spa3");
        c.public = Some(true);
        c.client_secret = None;
        c.require_pkce = Some(false);
        assert_eq!(errors(&c), [ClientConfigError::PublicClientWithoutPkce]);
        assert_eq!(errors(&c)[0].field(), "require_pkce");
    }

    #[test]
    fn require_pkce_on_confidential_client() {
        let mut c = cfg("app");
        c.require_pkce = Some(true);
        assert!(build(&c).unwrap().require_pkce);
    }

    #[test]
    fn every_validation_error_names_its_field() {
        type Case = (fn(&mut OidcClientConfig), ClientConfigError, &'static str);
        let cases: Vec<Case> = vec![
            (
                |c| c.client_id = String::new(),
                ClientConfigError::ClientId("must not be empty"),
                "client_id",
            ),
            (
                |c| c.client_id = "a".repeat(101),
                ClientConfigError::ClientId("longer than 100 characters"),
                "client_id",
            ),
            (
                |c| c.client_id = "bad id".into(),
                ClientConfigError::ClientId("only letters, digits and - . _ ~ are allowed"),
                "client_id",
            ),
            (
                |c| c.client_name = Some("x\ny".into()),
                ClientConfigError::ClientName,
                "client_name",
            ),
            (
                |c| c.client_secret = None,
                ClientConfigError::MissingSecret,
                "client_secret",
            ),
            (
                |c| c.client_secret = Some(Secret::new("")),
                ClientConfigError::EmptySecret,
                "client_secret",
            ),
            (
                |c| c.client_secret = Some(Secret::new("$plaintext$")),
                ClientConfigError::EmptySecret,
                "client_secret",
            ),
            (
                |c| c.client_secret = Some(Secret::new("$pbkdf2-sha512$x")),
                ClientConfigError::SecretDigest(DigestError::Malformed(
                    "pbkdf2",
                    "expected $rounds$salt$hash".into(),
                )),
                "client_secret",
            ),
            (
                |c| c.client_secret = Some(Secret::new("$md5$abc")),
                ClientConfigError::SecretDigest(DigestError::Unsupported),
                "client_secret",
            ),
            (
                |c| c.client_secret_file = Some("/etc/x".into()),
                ClientConfigError::SecretAndFile,
                "client_secret",
            ),
            (
                |c| {
                    c.client_secret = None;
                    c.client_secret_file = Some("relative/x".into());
                },
                ClientConfigError::SecretFile {
                    path: "relative/x".into(),
                    reason: "must be an absolute path".into(),
                },
                "client_secret_file",
            ),
            (
                |c| {
                    c.client_secret = None;
                    c.client_secret_file = Some("/missing".into());
                },
                ClientConfigError::SecretFile {
                    path: "/missing".into(),
                    reason: "/missing not found".into(),
                },
                "client_secret_file",
            ),
            (
                |c| {
                    c.public = Some(true);
                },
                ClientConfigError::SecretOnPublicClient,
                "client_secret",
            ),
            (
                |c| c.redirect_uris = OneOrMany::default(),
                ClientConfigError::NoRedirectUris,
                "redirect_uris",
            ),
            (
                |c| c.redirect_uris = list(&["/cb"]),
                ClientConfigError::RedirectUri {
                    field: "redirect_uris",
                    uri: "/cb".into(),
                    problem: UriProblem::NotAbsolute,
                },
                "redirect_uris",
            ),
            (
                |c| c.post_logout_redirect_uris = list(&["https://a/#x"]),
                ClientConfigError::RedirectUri {
                    field: "post_logout_redirect_uris",
                    uri: "https://a/#x".into(),
                    problem: UriProblem::Fragment,
                },
                "post_logout_redirect_uris",
            ),
            (
                |c| c.scopes = Some(list(&["openid", "address"])),
                ClientConfigError::UnknownScope("address".into()),
                "scopes",
            ),
            (
                |c| c.scopes = Some(list(&["profile"])),
                ClientConfigError::MissingOpenid,
                "scopes",
            ),
            (
                |c| {
                    c.scopes = Some(list(&["openid", "offline_access"]));
                    c.grant_types = Some(list(&["authorization_code"]));
                },
                ClientConfigError::OfflineAccessWithoutRefreshGrant,
                "scopes",
            ),
            (
                |c| c.consent_mode = Some("always".into()),
                ClientConfigError::ConsentMode("always".into()),
                "consent_mode",
            ),
            (
                |c| c.token_endpoint_auth_method = Some("private_key_jwt".into()),
                ClientConfigError::AuthMethod("private_key_jwt".into()),
                "token_endpoint_auth_method",
            ),
            (
                |c| {
                    c.public = Some(true);
                    c.client_secret = None;
                    c.token_endpoint_auth_method = Some("client_secret_basic".into());
                },
                ClientConfigError::PublicClientAuthMethod("client_secret_basic".into()),
                "token_endpoint_auth_method",
            ),
            (
                |c| {
                    c.public = Some(false);
                    c.token_endpoint_auth_method = Some("none".into());
                },
                ClientConfigError::NoneMethodOnConfidentialClient,
                "public",
            ),
            (
                |c| c.grant_types = Some(list(&["authorization_code", "implicit"])),
                ClientConfigError::GrantType("implicit".into()),
                "grant_types",
            ),
            (
                |c| c.grant_types = Some(list(&["refresh_token"])),
                ClientConfigError::NoAuthorizationCodeGrant,
                "grant_types",
            ),
            (
                |c| c.response_types = Some(list(&["code", "id_token"])),
                ClientConfigError::ResponseType("id_token".into()),
                "response_types",
            ),
            (
                |c| c.allowed_groups = Some(list(&["admins", ""])),
                ClientConfigError::AllowedGroup(String::new()),
                "allowed_groups",
            ),
            (
                |c| c.allowed_groups = Some(list(&["a,b"])),
                ClientConfigError::AllowedGroup("a,b".into()),
                "allowed_groups",
            ),
            (
                |c| c.authorization_policy = Some("deny".into()),
                ClientConfigError::Policy("deny".into()),
                "authorization_policy",
            ),
            (
                |c| c.id_token_signed_response_alg = Some("none".into()),
                ClientConfigError::IdTokenAlg("none".into()),
                "id_token_signed_response_alg",
            ),
            (
                |c| c.id_token_signed_response_alg = Some("rs256".into()),
                ClientConfigError::IdTokenAlg("rs256".into()),
                "id_token_signed_response_alg",
            ),
            (
                |c| c.userinfo_signed_response_alg = Some("RS256".into()),
                ClientConfigError::UserinfoAlg("RS256".into()),
                "userinfo_signed_response_alg",
            ),
        ];
        for (mutate, expected, field) in cases {
            let mut c = cfg("app");
            mutate(&mut c);
            let errs = errors(&c);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0], expected);
            assert_eq!(errs[0].field(), field);
            assert!(errs[0].to_string().starts_with(field), "{}", errs[0]);
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = cfg("bad id");
        c.redirect_uris = OneOrMany::default();
        c.consent_mode = Some("x".into());
        let e = build(&c).unwrap_err();
        assert_eq!(e.0.len(), 3);
        let text = e.to_string();
        assert!(
            text.contains("client_id:")
                && text.contains("redirect_uris:")
                && text.contains("consent_mode:")
        );
    }

    #[test]
    fn empty_secret_file_skips_the_client() {
        let mut c = cfg("app");
        c.client_secret = None;
        c.client_secret_file = Some("/s".into());
        let e = OidcClient::from_config("a.yml", &c, &mut |_| Ok(Secret::new("\n")))
            .unwrap_err()
            .0;
        assert_eq!(
            e,
            [ClientConfigError::SecretFile {
                path: "/s".into(),
                reason: "is empty".into()
            }]
        );
    }

    #[test]
    fn read_secret_file_strips_trailing_newlines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, "0123abcd\r\n\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "0123abcd");
        std::fs::write(&p, " a b \n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), " a b ");
        assert!(read_secret_file(&d.path().join("missing")).is_err());
    }

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://halos.local/signalk-server/signalk/v1/auth/oidc/callback",
            "http://192.168.1.5:3000/login/generic_oauth",
            "https://q.halos.local/cb?tenant=a",
            "http://localhost/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for (bad, p) in [
            ("cb", UriProblem::NotAbsolute),
            ("//host/cb", UriProblem::NotAbsolute),
            ("ftp://h/cb", UriProblem::Scheme),
            ("javascript:alert(1)", UriProblem::Scheme),
            ("https://h/cb#frag", UriProblem::Fragment),
            ("https://h/cb#", UriProblem::Fragment),
            ("https://u@h/cb", UriProblem::UserInfo),
            ("https://u:p@h/cb", UriProblem::UserInfo),
            ("https://*.halos.local/cb", UriProblem::Wildcard),
            ("https://h/cb/*", UriProblem::Wildcard),
            (" https://h/cb", UriProblem::Whitespace),
            ("https://h/cb\n", UriProblem::Whitespace),
            ("https://${HALOS_DOMAIN}/cb", UriProblem::Unexpanded),
            ("file:///etc/passwd", UriProblem::Scheme),
        ] {
            assert_eq!(check_redirect_uri(bad), Err(p), "{bad}");
        }
    }

    #[test]
    fn redirect_uris_match_exactly() {
        let mut c = cfg("app1");
        c.redirect_uris = list(&[
            "https://app1.halos.local/oauth/callback",
            "https://q.halos.local/cb?tenant=a",
        ]);
        c.post_logout_redirect_uris = list(&["https://app1.halos.local/"]);
        let client = build(&c).unwrap();
        assert!(client.redirect_uri_registered("https://app1.halos.local/oauth/callback"));
        assert!(client.redirect_uri_registered("https://q.halos.local/cb?tenant=a"));
        // security.md O1 list: none of these match.
        for near in [
            "https://app1.halos.local/oauth/callback/",
            "https://app1.halos.local/oauth/callback?x=1",
            "https://app1.halos.local/oauth/callback#f",
            "https://APP1.halos.local/oauth/callback",
            "https://app1.halos.local:443/oauth/callback",
            "https://app1.halos.local/oauth/Callback",
            "https://app1.halos.local/oauth/callback/../callback",
            "https://app1.halos.local/oauth/callback;x=1",
            "https://app1.halos.local/oauth/callback%2F",
            "https://app1.halos.local/oauth/%63allback",
            "https://app1.halos.local@evil.example/oauth/callback",
            "http://app1.halos.local/oauth/callback",
            "https://evil.example/oauth/callback",
            "https://q.halos.local/cb?tenant=b",
            "https://q.halos.local/cb?tenant=a&x=1",
            "",
        ] {
            assert!(!client.redirect_uri_registered(near), "{near}");
        }
        assert!(client.post_logout_redirect_uri_registered("https://app1.halos.local/"));
        assert!(!client.post_logout_redirect_uri_registered("https://app1.halos.local/?foo=bar"));
        assert!(
            !client.post_logout_redirect_uri_registered("https://app1.halos.local/oauth/callback")
        );
    }

    #[test]
    fn consent_modes() {
        let mut c = cfg("a");
        for (mode, dur, expect) in [
            ("implicit", None, ConsentMode::Implicit),
            ("explicit", None, ConsentMode::Explicit),
            (
                "pre-configured",
                None,
                ConsentMode::PreConfigured {
                    duration: DEFAULT_PRE_CONFIGURED_CONSENT,
                },
            ),
            (
                "pre-configured",
                Some(60),
                ConsentMode::PreConfigured {
                    duration: Duration::from_secs(60),
                },
            ),
            ("auto", None, ConsentMode::Explicit),
            (
                "auto",
                Some(60),
                ConsentMode::PreConfigured {
                    duration: Duration::from_secs(60),
                },
            ),
        ] {
            c.consent_mode = Some(mode.into());
            c.pre_configured_consent_duration = dur.map(ConfigDuration::from_secs);
            assert_eq!(build(&c).unwrap().consent_mode, expect, "{mode}");
        }
    }

    #[test]
    fn policy_groups_alg_and_grants() {
        let mut c = cfg("grafana");
        c.authorization_policy = Some("two_factor".into());
        c.allowed_groups = Some(list(&["admins", "users"]));
        c.id_token_signed_response_alg = Some("ES256".into());
        c.userinfo_signed_response_alg = Some("none".into());
        c.grant_types = Some(list(&["authorization_code"]));
        c.response_types = Some(list(&["code"]));
        let client = build(&c).unwrap();
        assert_eq!(client.authorization_policy, Policy::TwoFactor);
        assert_eq!(client.id_token_alg, SigningAlg::ES256);
        assert!(client.user_allowed(&["users".into()]));
        assert!(client.user_allowed(&["x".into(), "admins".into()]));
        assert!(!client.user_allowed(&["guests".into()]));
        assert!(!client.user_allowed(&[]));
        assert!(!client.user_allowed(&["Admins".into()]));
        assert!(client.allows_grant(GrantType::AuthorizationCode));
        assert!(!client.allows_grant(GrantType::RefreshToken));
    }

    #[test]
    fn plaintext_secrets_compare_exactly() {
        let mut blocks = Vec::new();
        let client = build(&cfg("a")).unwrap();
        assert!(client.verify_secret("s3cret", &mut blocks));
        for wrong in ["s3cre", "s3cret ", "S3cret", "", "s3cret\0"] {
            assert!(!client.verify_secret(wrong, &mut blocks), "{wrong:?}");
        }
        let mut c = cfg("b");
        c.client_secret = Some(Secret::new("$plaintext$$dollar"));
        let client = build(&c).unwrap();
        assert!(client.verify_secret("$dollar", &mut blocks));
        assert!(!client.verify_secret("$plaintext$$dollar", &mut blocks));
    }

    // Generated with Python passlib 1.7.4 (never with our own hasher):
    //   pbkdf2_sha512.using(rounds=1000).hash("halos-client-secret")
    //   pbkdf2_sha256.using(rounds=1000).hash("halos-client-secret")
    // and argon2-cffi 25.1.0:
    //   PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("halos-client-secret")
    pub(crate) const PBKDF2_SHA512: &str = "$pbkdf2-sha512$1000$PMf4/7/3fu/dG0OIsbZWig$RxA2QjwoXFrWgx1YGK6mxI43Ya7jfg0e4DJqZK3dmC.Dt2EzIvxQIhCLzlMwkIXGopvD.DxdmiyWjZZDwCzeXw";
    const PBKDF2_SHA256: &str =
        "$pbkdf2-sha256$1000$EMK4NyaEEMLYW2sNQQghRA$CgKuJh5rfxbt7jSibrJRy9.oLh4Aj6nV/tWtGGD5gak";
    const ARGON2ID: &str = "$argon2id$v=19$m=64,t=1,p=1$KAlEMaoBCwJRWY5JQAQhyA$2Z0T3sW9gmKuF2I/BbR2I50DbAbogZ6d+JoJXI/kseQ";

    #[test]
    fn digest_secrets_verify() {
        let mut blocks = Vec::new();
        for (digest, name) in [
            (PBKDF2_SHA512, "pbkdf2"),
            (PBKDF2_SHA256, "pbkdf2"),
            (ARGON2ID, "argon2id"),
        ] {
            let mut c = cfg("a");
            c.client_secret = Some(Secret::new(digest));
            let client = build(&c).unwrap();
            assert!(client.secret_check_is_costly());
            assert!(
                client.verify_secret("halos-client-secret", &mut blocks),
                "{digest}"
            );
            assert!(
                !client.verify_secret("halos-client-secreT", &mut blocks),
                "{digest}"
            );
            assert!(!client.verify_secret(digest, &mut blocks), "{digest}");
            let dbg = format!("{client:?}");
            assert!(dbg.contains(name), "{dbg}");
        }
        let mut c = cfg("a");
        c.client_secret = Some(Secret::new(ARGON2ID));
        assert_eq!(build(&c).unwrap().secret_argon2_blocks(), 64);
    }

    #[test]
    fn secrets_never_in_debug_output() {
        let mut c = cfg("a");
        c.client_secret = Some(Secret::new("very-secret-plaintext"));
        let dbg = format!("{:?}", build(&c).unwrap());
        assert!(!dbg.contains("very-secret-plaintext"), "{dbg}");
        let hex_digest = hex::encode(sha256("very-secret-plaintext"));
        assert!(!dbg.contains(&hex_digest[..16]));
        assert!(dbg.contains("***"));

        c.client_secret = Some(Secret::new(PBKDF2_SHA512));
        let dbg = format!("{:?}", build(&c).unwrap());
        let hash_part = PBKDF2_SHA512.rsplit('$').next().unwrap();
        assert!(!dbg.contains(hash_part), "{dbg}");

        let reg = ClientRegistry::build(vec![("a.yml".to_string(), c)], no_files);
        let dbg = format!("{reg:?}");
        assert!(!dbg.contains(hash_part));
    }

    #[test]
    fn registry_first_wins_and_reports_duplicates_and_errors() {
        let mut broken = cfg("broken");
        broken.redirect_uris = OneOrMany::default();
        let mut dup_of_broken = cfg("broken");
        dup_of_broken.client_name = Some("second".into());
        let mut second_signalk = cfg("signalk");
        second_signalk.client_name = Some("impostor".into());
        let mut first_signalk = cfg("signalk");
        first_signalk.client_name = Some("Signal K".into());
        let mut filed = cfg("grafana");
        filed.client_secret = None;
        filed.client_secret_file = Some("/run/grafana-secret".into());
        let files: Map<PathBuf, &str> = [(PathBuf::from("/run/grafana-secret"), "gs\n")].into();
        let reg = ClientRegistry::build(
            vec![
                (
                    "/etc/halos/oidc-clients.d/signalk.yml".to_string(),
                    first_signalk,
                ),
                ("/etc/halos/oidc-clients.d/broken.yml".to_string(), broken),
                ("/etc/halos/oidc-clients.d/grafana.yml".to_string(), filed),
                (
                    "/etc/halos/oidc-clients.d/zz-signalk.yml".to_string(),
                    second_signalk,
                ),
                (
                    "/etc/halos/oidc-clients.d/zz-broken.yml".to_string(),
                    dup_of_broken,
                ),
            ],
            |p: &Path| {
                files
                    .get(p)
                    .map(|s| Secret::new(*s))
                    .ok_or_else(|| std::io::Error::other("missing"))
            },
        );
        assert_eq!(reg.len(), 2);
        assert!(!reg.is_empty());
        assert_eq!(reg.get("signalk").unwrap().name, "Signal K");
        assert_eq!(
            reg.get("signalk").unwrap().source,
            "/etc/halos/oidc-clients.d/signalk.yml"
        );
        assert!(reg.get("broken").is_none());
        assert!(
            reg.get("grafana")
                .unwrap()
                .verify_secret("gs", &mut Vec::new())
        );
        let ids: Vec<&str> = reg.clients().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["grafana", "signalk"]);

        let errs = reg.errors();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].source, "/etc/halos/oidc-clients.d/broken.yml");
        assert_eq!(
            errs[0].kind,
            RegistryErrorKind::Invalid(ClientErrors(vec![ClientConfigError::NoRedirectUris]))
        );
        assert_eq!(errs[1].source, "/etc/halos/oidc-clients.d/zz-signalk.yml");
        assert_eq!(
            errs[1].kind,
            RegistryErrorKind::Duplicate {
                first_source: "/etc/halos/oidc-clients.d/signalk.yml".into()
            }
        );
        assert!(
            errs[1]
                .to_string()
                .contains("already defined in /etc/halos/oidc-clients.d/signalk.yml")
        );
        // A broken first definition still claims its id.
        assert_eq!(errs[2].client_id, "broken");
        assert!(matches!(errs[2].kind, RegistryErrorKind::Duplicate { .. }));
    }
}
