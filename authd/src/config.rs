//! `authd.yml`: strict parsing, `AUTHD_*` overrides, validation.
//!
//! Loading is three steps, each with typed errors that name the source, the key path and
//! the reason:
//! 1. the YAML file is deserialised into these structs (`deny_unknown_fields` everywhere,
//!    defaults for every optional key);
//! 2. `AUTHD_<PATH>` / `AUTHD_<PATH>_FILE` environment variables override single keys;
//! 3. [`Config::validate`] checks values and cross-field rules.
//!
//! Section names follow Authelia's where Authelia has one, so its users recognise them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::duration::ConfigDuration;
use crate::secret::{Secret, SecretUrl};
use crate::yaml::{YamlError, parse_yaml};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/halos/authd.yml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/halos-authd";
pub const ENV_PREFIX: &str = "AUTHD_";

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `environment` for an override.
    pub source: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// Dotted key path, e.g. `session.inactivity`; empty when the file itself is at fault.
    pub key_path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key_path.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.key_path, self.reason)
        }
    }
}

/// Every problem found; start-up stops when this is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<YamlError> for ConfigError {
    fn from(e: YamlError) -> Self {
        ConfigError {
            source: e.source,
            line: e.line,
            column: e.column,
            key_path: e.key_path,
            reason: e.reason,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub hostnames_file: HostnamesFile,
    pub authentication_backend: AuthenticationBackendConfig,
    pub storage: StorageConfig,
    pub session: SessionConfig,
    pub access_control: AccessControlConfig,
    pub regulation: RegulationConfig,
    pub totp: TotpConfig,
    pub webauthn: WebauthnConfig,
    pub identity_providers: IdentityProvidersConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub definitions: DefinitionsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct HostnamesFile(pub PathBuf);
impl Default for HostnamesFile {
    fn default() -> Self {
        Self("/etc/halos/hostnames.conf".into())
    }
}

/// Where the daemon listens: `tcp://HOST:PORT/prefix` or `unix:///path.sock[/prefix]`
/// (Authelia's address syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub listen: ListenAddress,
    /// Path prefix without trailing slash, e.g. `/sso`; empty for the root.
    pub path_prefix: String,
}

impl Default for ServerAddress {
    fn default() -> Self {
        Self {
            listen: ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 9091))),
            path_prefix: "/sso".into(),
        }
    }
}

impl ServerAddress {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (listen, path) = if let Some(rest) = s.strip_prefix("tcp://") {
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let hostport = if hostport.starts_with(':') {
                format!("0.0.0.0{hostport}")
            } else {
                hostport.to_string()
            };
            let addr: SocketAddr = hostport.parse().map_err(|_| {
                format!("invalid address {s:?}: expected tcp://IP:PORT[/prefix], e.g. tcp://127.0.0.1:9091/sso")
            })?;
            (ListenAddress::Tcp(addr), path)
        } else if let Some(rest) = s.strip_prefix("unix://") {
            // unix:///run/x.sock/sso → socket /run/x.sock, prefix /sso (split after ".sock").
            let (sock, path) = match rest.find(".sock") {
                Some(i) => (&rest[..i + 5], &rest[i + 5..]),
                None => (rest, ""),
            };
            if !sock.starts_with('/') {
                return Err(format!(
                    "invalid address {s:?}: unix socket path must be absolute"
                ));
            }
            (ListenAddress::Unix(sock.into()), path)
        } else {
            return Err(format!(
                "invalid address {s:?}: must start with tcp:// or unix://"
            ));
        };
        let prefix = path.trim_end_matches('/');
        if !prefix.is_empty()
            && !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
        {
            return Err(format!("invalid path prefix {prefix:?}"));
        }
        Ok(Self {
            listen,
            path_prefix: prefix.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ServerAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A CIDR, or a single address meaning /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(Cidr(n.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!("{s:?} is not an IP address or CIDR"))
    }
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub address: ServerAddress,
    /// Peers whose `X-Forwarded-*` / `X-Original-*` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request body accepted on any endpoint.
    pub max_body_bytes: usize,
    /// Slow clients: whole-request deadline.
    pub request_timeout: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: ServerAddress::default(),
            trusted_proxies: vec![
                Cidr::parse("127.0.0.0/8").unwrap_or(Cidr(IpNet::default())),
                Cidr::parse("::1/128").unwrap_or(Cidr(IpNet::default())),
            ],
            max_body_bytes: 64 * 1024,
            request_timeout: ConfigDuration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticationBackendConfig {
    pub file: FileBackendConfig,
    /// Authelia accepts this; the file backend here always re-reads on change.
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileBackendConfig {
    pub path: PathBuf,
    pub watch: bool,
    pub password: PasswordConfig,
}

impl Default for FileBackendConfig {
    fn default() -> Self {
        Self {
            path: Path::new(DEFAULT_STATE_DIR).join("users_database.yml"),
            watch: true,
            password: PasswordConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Only `argon2` is written; every format in the users file is still verified.
    pub algorithm: String,
    pub argon2: Argon2Config,
    /// Password hashes computed at once. Each argon2 slot holds `memory` KiB.
    pub max_concurrent: usize,
    /// Logins allowed to wait for a slot; beyond that the daemon answers 503.
    pub max_queued: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            algorithm: "argon2".into(),
            argon2: Argon2Config::default(),
            // Sized for a 1 GiB Pi: 2 × 64 MiB of hash memory at most.
            max_concurrent: 2,
            max_queued: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub variant: String,
    pub iterations: u32,
    /// KiB, as in Authelia.
    pub memory: u32,
    pub parallelism: u32,
    pub key_length: u32,
    pub salt_length: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            variant: "argon2id".into(),
            iterations: 3,
            memory: 65536,
            parallelism: 4,
            key_length: 32,
            salt_length: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub local: LocalStorageConfig,
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalStorageConfig {
    pub path: PathBuf,
}

impl Default for LocalStorageConfig {
    fn default() -> Self {
        Self {
            path: Path::new(DEFAULT_STATE_DIR).join("state.sqlite"),
        }
    }
}

impl LocalStorageConfig {
    /// Keys live in a `keys/` directory beside the state database.
    pub fn keys_dir(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("keys")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: SecretUrl,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub database_index: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub name: String,
    pub inactivity: ConfigDuration,
    pub expiration: ConfigDuration,
    pub remember_me: ConfigDuration,
    pub same_site: SameSite,
    pub cookies: Vec<CookieDomainConfig>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: "halos_session".into(),
            inactivity: ConfigDuration::from_secs(7 * 86_400),
            expiration: ConfigDuration::from_secs(30 * 86_400),
            remember_me: ConfigDuration::from_secs(365 * 86_400),
            same_site: SameSite::Lax,
            cookies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieDomainConfig {
    pub domain: String,
    pub authelia_url: url::Url,
    #[serde(default)]
    pub default_redirection_url: Option<url::Url>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Bypass,
    #[default]
    OneFactor,
    TwoFactor,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessControlConfig {
    pub default_policy: Policy,
    pub rules: Vec<AccessRuleConfig>,
    /// Names of the identity headers sent to the proxy (Remote-User, …).
    pub identity_headers: IdentityHeaders,
}

impl Default for AccessControlConfig {
    fn default() -> Self {
        Self {
            default_policy: Policy::OneFactor,
            rules: Vec::new(),
            identity_headers: IdentityHeaders::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub user: String,
    pub groups: String,
    pub name: String,
    pub email: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user: "Remote-User".into(),
            groups: "Remote-Groups".into(),
            name: "Remote-Name".into(),
            email: "Remote-Email".into(),
        }
    }
}

/// A value that may be written as one string or as a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => OneOrMany(vec![s]),
            Raw::Many(v) => OneOrMany(v),
        })
    }
}

/// `subject: 'user:a'`, `subject: ['user:a', 'group:b']` (OR), or
/// `subject: [['group:a', 'group:b'], 'user:c']` (OR of ANDs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects(pub Vec<Vec<String>>);

impl<'de> Deserialize<'de> for Subjects {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            One(String),
            All(Vec<String>),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<Item>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => Subjects(vec![vec![s]]),
            Raw::Many(items) => Subjects(
                items
                    .into_iter()
                    .map(|i| match i {
                        Item::One(s) => vec![s],
                        Item::All(v) => v,
                    })
                    .collect(),
            ),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleConfig {
    #[serde(default)]
    pub domain: OneOrMany,
    #[serde(default)]
    pub domain_regex: OneOrMany,
    #[serde(default)]
    pub resources: OneOrMany,
    #[serde(default)]
    pub methods: OneOrMany,
    #[serde(default)]
    pub networks: OneOrMany,
    #[serde(default)]
    pub subject: Subjects,
    pub policy: Policy,
    #[serde(default)]
    pub identity_headers: Option<IdentityHeaders>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegulationConfig {
    pub max_retries: u32,
    pub find_time: ConfigDuration,
    pub ban_time: ConfigDuration,
    pub modes: Vec<String>,
}

impl Default for RegulationConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            find_time: ConfigDuration::from_secs(120),
            ban_time: ConfigDuration::from_secs(300),
            modes: vec!["user".into(), "ip".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub disable: bool,
    pub issuer: String,
    pub algorithm: String,
    pub digits: u32,
    pub period: u32,
    pub skew: u32,
    pub secret_size: u32,
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            disable: false,
            issuer: "HaLOS".into(),
            algorithm: "sha1".into(),
            digits: 6,
            period: 30,
            skew: 1,
            secret_size: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    pub disable: bool,
    pub display_name: String,
    pub timeout: ConfigDuration,
    pub enable_passkey_login: bool,
    /// A passkey verified with user verification (PIN, biometrics) counts as two factors.
    pub passkey_uv_two_factor: bool,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            disable: false,
            display_name: "HaLOS".into(),
            timeout: ConfigDuration::from_secs(60),
            enable_passkey_login: true,
            passkey_uv_two_factor: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityProvidersConfig {
    pub oidc: OidcConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Defaults to `https://${HALOS_DOMAIN}/sso`.
    pub issuer: Option<url::Url>,
    pub clients_dir: PathBuf,
    pub clients: Vec<OidcClientConfig>,
    pub lifespans: OidcLifespans,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            clients_dir: "/etc/halos/oidc-clients.d".into(),
            clients: Vec::new(),
            lifespans: OidcLifespans::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcLifespans {
    pub access_token: ConfigDuration,
    pub authorize_code: ConfigDuration,
    pub id_token: ConfigDuration,
    pub refresh_token: ConfigDuration,
}

impl Default for OidcLifespans {
    fn default() -> Self {
        Self {
            access_token: ConfigDuration::from_secs(3600),
            authorize_code: ConfigDuration::from_secs(60),
            id_token: ConfigDuration::from_secs(3600),
            refresh_token: ConfigDuration::from_secs(30 * 86_400),
        }
    }
}

/// An OIDC client, as in authd.yml or a snippet (DESIGN §8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcClientConfig {
    pub client_id: String,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub redirect_uris: OneOrMany,
    #[serde(default)]
    pub post_logout_redirect_uris: OneOrMany,
    #[serde(default)]
    pub scopes: Option<OneOrMany>,
    #[serde(default)]
    pub consent_mode: Option<String>,
    #[serde(default)]
    pub pre_configured_consent_duration: Option<ConfigDuration>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub require_pkce: Option<bool>,
    #[serde(default)]
    pub grant_types: Option<OneOrMany>,
    #[serde(default)]
    pub response_types: Option<OneOrMany>,
    #[serde(default)]
    pub allowed_groups: Option<OneOrMany>,
    #[serde(default)]
    pub authorization_policy: Option<String>,
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    pub userinfo_signed_response_alg: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub address: Option<ServerAddress>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DefinitionsConfig {
    pub network: BTreeMap<String, Vec<Cidr>>,
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

impl Config {
    /// Reads `path` (absent → defaults when `optional`), applies `env`, validates.
    pub fn load(
        path: &Path,
        optional: bool,
        env: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(text) => Self::from_yaml(&text, &source).map_err(|e| ConfigErrors(vec![e]))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => Config::default(),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    source,
                    line: None,
                    column: None,
                    key_path: String::new(),
                    reason: format!("cannot read: {e}"),
                }]));
            }
        };
        let mut errors = cfg.apply_env(env);
        errors.extend(cfg.validate(&source));
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Parses YAML text strictly (no env, no validation).
    pub fn from_yaml(text: &str, source: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        parse_yaml::<Config>(text, source, 1024 * 1024).map_err(ConfigError::from)
    }

    /// Applies `AUTHD_<PATH>` and `AUTHD_<PATH>_FILE` overrides. An `AUTHD_*` variable that
    /// names no key is an error, so a typo does not go unnoticed.
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" || rest == "LOG" {
                continue; // the config path (clap reads it) and the tracing filter
            }
            let err = |reason: String| ConfigError {
                source: "environment".into(),
                line: None,
                column: None,
                key_path: name.clone(),
                reason,
            };
            let (key, value) = match rest.strip_suffix("_FILE") {
                Some(key) if ENV_KEYS.iter().any(|(k, _)| *k == key) => {
                    match std::fs::read_to_string(value) {
                        Ok(v) => (key, v.trim_end_matches(['\n', '\r']).to_string()),
                        Err(e) => {
                            errors.push(err(format!("cannot read {value}: {e}")));
                            continue;
                        }
                    }
                }
                _ => (rest, value.clone()),
            };
            match ENV_KEYS.iter().find(|(k, _)| *k == key) {
                Some((_, set)) => {
                    if let Err(reason) = set(self, &value) {
                        errors.push(err(reason));
                    }
                }
                None => errors.push(err(format!(
                    "no such configuration key (known: {})",
                    ENV_KEYS
                        .iter()
                        .map(|(k, _)| format!("{ENV_PREFIX}{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        errors
    }

    /// Value and cross-field checks the types cannot express.
    pub fn validate(&self, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |key: &str, reason: String| {
            errors.push(ConfigError {
                source: source.to_string(),
                line: None,
                column: None,
                key_path: key.to_string(),
                reason,
            })
        };
        let a = &self.authentication_backend.file.password;
        if a.algorithm != "argon2" {
            err(
                "authentication_backend.file.password.algorithm",
                format!(
                    "{:?} is not supported for new hashes (use argon2)",
                    a.algorithm
                ),
            );
        }
        if !matches!(
            a.argon2.variant.as_str(),
            "argon2id" | "argon2i" | "argon2d"
        ) {
            err(
                "authentication_backend.file.password.argon2.variant",
                "must be argon2id, argon2i or argon2d".into(),
            );
        }
        if !(8..=4 * 1024 * 1024).contains(&a.argon2.memory) {
            err(
                "authentication_backend.file.password.argon2.memory",
                "must be between 8 and 4194304 KiB".into(),
            );
        }
        if !(1..=16).contains(&a.argon2.iterations) {
            err(
                "authentication_backend.file.password.argon2.iterations",
                "must be between 1 and 16".into(),
            );
        }
        if !(1..=16).contains(&a.argon2.parallelism) {
            err(
                "authentication_backend.file.password.argon2.parallelism",
                "must be between 1 and 16".into(),
            );
        }
        if !(16..=64).contains(&a.argon2.key_length) || !(8..=64).contains(&a.argon2.salt_length) {
            err(
                "authentication_backend.file.password.argon2",
                "key_length must be 16..64 and salt_length 8..64".into(),
            );
        }
        if a.max_concurrent == 0 || a.max_concurrent > 64 {
            err(
                "authentication_backend.file.password.max_concurrent",
                "must be between 1 and 64".into(),
            );
        }
        let s = &self.session;
        let cookie_name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !cookie_name_ok(&s.name) {
            err(
                "session.name",
                "must be a non-empty cookie name of [A-Za-z0-9_-]".into(),
            );
        }
        if s.inactivity.0.is_zero() || s.expiration.0.is_zero() {
            err(
                "session",
                "inactivity and expiration must be longer than zero".into(),
            );
        }
        for (i, c) in s.cookies.iter().enumerate() {
            let key = format!("session.cookies[{i}]");
            if let Err(reason) = validate_cookie_domain(&c.domain) {
                err(&format!("{key}.domain"), reason);
            }
            if c.name.as_deref().is_some_and(|n| !cookie_name_ok(n)) {
                err(
                    &format!("{key}.name"),
                    "must be a non-empty cookie name of [A-Za-z0-9_-]".into(),
                );
            }
            if !matches!(c.authelia_url.scheme(), "https" | "http") {
                err(
                    &format!("{key}.authelia_url"),
                    "must be an https:// (or explicit LAN http://) URL".into(),
                );
            }
            match c.authelia_url.host_str() {
                Some(h) if host_within(h, &c.domain) => {}
                _ => err(
                    &format!("{key}.authelia_url"),
                    format!("host must be {} or a subdomain of it", c.domain),
                ),
            }
            if let Some(d) = &c.default_redirection_url {
                match d.host_str() {
                    Some(h) if host_within(h, &c.domain) => {}
                    _ => err(
                        &format!("{key}.default_redirection_url"),
                        format!("host must be {} or a subdomain of it", c.domain),
                    ),
                }
            }
        }
        for (i, r) in self.access_control.rules.iter().enumerate() {
            let key = format!("access_control.rules[{i}]");
            for re in &r.domain_regex.0 {
                if let Err(e) = regex::Regex::new(re) {
                    err(
                        &format!("{key}.domain_regex"),
                        format!("invalid regex: {e}"),
                    );
                }
            }
            for re in &r.resources.0 {
                if let Err(e) = regex::Regex::new(re) {
                    err(&format!("{key}.resources"), format!("invalid regex: {e}"));
                }
            }
            for m in &r.methods.0 {
                if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
                    err(
                        &format!("{key}.methods"),
                        format!("{m:?} is not an HTTP method"),
                    );
                }
            }
            for n in &r.networks.0 {
                if Cidr::parse(n).is_err() && !self.definitions.network.contains_key(n) {
                    err(
                        &format!("{key}.networks"),
                        format!("{n:?} is neither a CIDR nor a name in definitions.network"),
                    );
                }
            }
            for group in &r.subject.0 {
                for s in group {
                    if !(s.starts_with("user:")
                        || s.starts_with("group:")
                        || s.starts_with("oauth2:client:"))
                    {
                        err(
                            &format!("{key}.subject"),
                            format!("{s:?} must start with user:, group: or oauth2:client:"),
                        );
                    }
                }
            }
            if r.policy == Policy::Bypass && !r.subject.0.is_empty() {
                err(
                    &key.to_string(),
                    "a bypass rule cannot have a subject".into(),
                );
            }
            if r.domain.0.is_empty() && r.domain_regex.0.is_empty() {
                err(
                    &format!("{key}.domain"),
                    "a rule needs domain or domain_regex".into(),
                );
            }
        }
        if let Some(r) = &self.storage.redis {
            let u = r.url.expose();
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("unix://"))
            {
                err(
                    "storage.redis.url",
                    "must start with redis://, rediss:// or unix://".into(),
                );
            }
        }
        if let Some(iss) = &self.identity_providers.oidc.issuer
            && iss.scheme() != "https"
            && iss.host_str() != Some("localhost")
            && iss.host_str() != Some("127.0.0.1")
        {
            err(
                "identity_providers.oidc.issuer",
                "must be an https:// URL".into(),
            );
        }
        for (i, c) in self.identity_providers.oidc.clients.iter().enumerate() {
            if c.client_id.is_empty() {
                err(
                    &format!("identity_providers.oidc.clients[{i}].client_id"),
                    "must not be empty".into(),
                );
            }
        }
        errors
    }

    pub fn path_prefix(&self) -> &str {
        &self.server.address.path_prefix
    }
}

/// A cookie domain must have a dot, no port, no wildcard and not be an IP.
pub fn validate_cookie_domain(d: &str) -> Result<(), String> {
    if d.parse::<IpAddr>().is_ok() {
        return Err(format!("{d:?} is an IP address; cookies need a DNS name"));
    }
    if d.starts_with('.') || d.contains(['*', ':', '/']) || !d.contains('.') {
        return Err(format!(
            "{d:?} must be a multi-label DNS name without leading dot, port or wildcard"
        ));
    }
    Ok(())
}

/// `host` equals `domain` or is a subdomain of it, compared label by label (case-insensitive).
pub fn host_within(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(&domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

type EnvSetter = fn(&mut Config, &str) -> Result<(), String>;

fn env_value<T: DeserializeOwned>(v: &str) -> Result<T, String> {
    parse_yaml::<T>(v, "environment", 64 * 1024).map_err(|e| e.reason)
}

/// A comma-separated or YAML-flow list.
fn env_list<T: DeserializeOwned>(v: &str) -> Result<Vec<T>, String> {
    if v.trim_start().starts_with('[') {
        return env_value(v);
    }
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| env_value::<T>(&format!("'{}'", s.replace('\'', "''"))))
        .collect()
}

/// Every key that can be overridden from the environment: `AUTHD_` + path in upper case.
pub const ENV_KEYS: &[(&str, EnvSetter)] = &[
    ("SERVER_ADDRESS", |c, v| {
        c.server.address = ServerAddress::parse(v)?;
        Ok(())
    }),
    ("SERVER_TRUSTED_PROXIES", |c, v| {
        c.server.trusted_proxies = env_list(v)?;
        Ok(())
    }),
    ("HOSTNAMES_FILE", |c, v| {
        c.hostnames_file = HostnamesFile(v.into());
        Ok(())
    }),
    ("AUTHENTICATION_BACKEND_FILE_PATH", |c, v| {
        c.authentication_backend.file.path = v.into();
        Ok(())
    }),
    (
        "AUTHENTICATION_BACKEND_FILE_PASSWORD_MAX_CONCURRENT",
        |c, v| {
            c.authentication_backend.file.password.max_concurrent = env_value(v)?;
            Ok(())
        },
    ),
    ("AUTHENTICATION_BACKEND_FILE_PASSWORD_MAX_QUEUED", |c, v| {
        c.authentication_backend.file.password.max_queued = env_value(v)?;
        Ok(())
    }),
    ("STORAGE_LOCAL_PATH", |c, v| {
        c.storage.local.path = v.into();
        Ok(())
    }),
    ("STORAGE_REDIS_URL", |c, v| {
        match &mut c.storage.redis {
            Some(r) => r.url = SecretUrl::new(v),
            None => {
                c.storage.redis = Some(RedisConfig {
                    url: SecretUrl::new(v),
                    password: None,
                    database_index: None,
                })
            }
        }
        Ok(())
    }),
    ("STORAGE_REDIS_PASSWORD", |c, v| {
        match &mut c.storage.redis {
            Some(r) => {
                r.password = Some(Secret::new(v));
                Ok(())
            }
            None => Err("storage.redis.url must be set first".into()),
        }
    }),
    ("STORAGE_REDIS_DATABASE_INDEX", |c, v| {
        match &mut c.storage.redis {
            Some(r) => {
                r.database_index = Some(env_value(v)?);
                Ok(())
            }
            None => Err("storage.redis.url must be set first".into()),
        }
    }),
    ("SESSION_NAME", |c, v| {
        c.session.name = v.into();
        Ok(())
    }),
    ("SESSION_INACTIVITY", |c, v| {
        c.session.inactivity = env_value(v)?;
        Ok(())
    }),
    ("SESSION_EXPIRATION", |c, v| {
        c.session.expiration = env_value(v)?;
        Ok(())
    }),
    ("SESSION_REMEMBER_ME", |c, v| {
        c.session.remember_me = env_value(v)?;
        Ok(())
    }),
    ("ACCESS_CONTROL_DEFAULT_POLICY", |c, v| {
        c.access_control.default_policy = env_value(v)?;
        Ok(())
    }),
    ("REGULATION_MAX_RETRIES", |c, v| {
        c.regulation.max_retries = env_value(v)?;
        Ok(())
    }),
    ("REGULATION_FIND_TIME", |c, v| {
        c.regulation.find_time = env_value(v)?;
        Ok(())
    }),
    ("REGULATION_BAN_TIME", |c, v| {
        c.regulation.ban_time = env_value(v)?;
        Ok(())
    }),
    ("IDENTITY_PROVIDERS_OIDC_ISSUER", |c, v| {
        c.identity_providers.oidc.issuer = Some(url::Url::parse(v).map_err(|e| e.to_string())?);
        Ok(())
    }),
    ("IDENTITY_PROVIDERS_OIDC_CLIENTS_DIR", |c, v| {
        c.identity_providers.oidc.clients_dir = v.into();
        Ok(())
    }),
    ("LOG_LEVEL", |c, v| {
        c.log.level = env_value(v)?;
        Ok(())
    }),
    ("LOG_FORMAT", |c, v| {
        c.log.format = env_value(v)?;
        Ok(())
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CONTRACT: &str = r#"
server:
  address: tcp://127.0.0.1:9091/sso          # or unix:///run/halos-authd/authd.sock
  trusted_proxies: [127.0.0.1/32, ::1/128]
hostnames_file: /etc/halos/hostnames.conf
authentication_backend:
  file:
    path: /var/lib/halos-authd/users_database.yml
storage:
  local:
    path: /var/lib/halos-authd/state.sqlite
  redis:
    url: redis://127.0.0.1:6379/0
session:
  name: halos_session
  inactivity: 7d
  expiration: 30d
  remember_me: 1y
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
      default_redirection_url: https://halos.local/
access_control:
  default_policy: one_factor
  rules:
    - domain: ['admin.halos.local']
      subject: [['group:admins']]
      policy: one_factor
regulation: {max_retries: 3, find_time: 2m, ban_time: 5m}
identity_providers:
  oidc:
    issuer: https://halos.local/sso
    clients_dir: /etc/halos/oidc-clients.d
    clients: []
"#;

    #[test]
    fn accepts_the_contract_shape() {
        let c = Config::from_yaml(CONTRACT, "authd.yml").unwrap();
        assert!(c.validate("authd.yml").is_empty());
        assert_eq!(c.server.address.path_prefix, "/sso");
        assert_eq!(
            c.server.address.listen,
            ListenAddress::Tcp("127.0.0.1:9091".parse().unwrap())
        );
        assert_eq!(c.session.inactivity.as_secs(), 7 * 86400);
        assert_eq!(c.session.remember_me.as_secs(), 365 * 86400);
        assert_eq!(
            c.access_control.rules[0].subject.0,
            vec![vec!["group:admins".to_string()]]
        );
        assert_eq!(c.regulation.find_time.as_secs(), 120);
        assert_eq!(
            c.storage.local.keys_dir(),
            PathBuf::from("/var/lib/halos-authd/keys")
        );
        assert!(c.storage.redis.is_some());
    }

    #[test]
    fn defaults_match_design() {
        let c = Config::default();
        assert_eq!(c.server.address, ServerAddress::default());
        assert_eq!(c.server.address.path_prefix, "/sso");
        assert_eq!(
            c.authentication_backend.file.path,
            PathBuf::from("/var/lib/halos-authd/users_database.yml")
        );
        assert_eq!(
            c.storage.local.path,
            PathBuf::from("/var/lib/halos-authd/state.sqlite")
        );
        assert_eq!(
            c.identity_providers.oidc.clients_dir,
            PathBuf::from("/etc/halos/oidc-clients.d")
        );
        assert_eq!(
            c.hostnames_file.0,
            PathBuf::from("/etc/halos/hostnames.conf")
        );
        assert_eq!(c.authentication_backend.file.password.argon2.memory, 65536);
        assert_eq!(c.authentication_backend.file.password.argon2.iterations, 3);
        assert_eq!(c.authentication_backend.file.password.argon2.parallelism, 4);
        assert!(c.validate("x").is_empty());
        assert!(
            c.server
                .trusted_proxies
                .iter()
                .any(|p| p.contains(&"127.0.0.1".parse().unwrap()))
        );
        assert!(
            !c.server
                .trusted_proxies
                .iter()
                .any(|p| p.contains(&"10.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_path() {
        let e = Config::from_yaml(
            "session:\n  name: x\n  inactivty: 5m\n",
            "/etc/halos/authd.yml",
        )
        .unwrap_err();
        assert_eq!(e.source, "/etc/halos/authd.yml");
        assert_eq!(e.line, Some(3));
        assert!(e.key_path.starts_with("session"), "{e}");
        assert!(e.reason.contains("inactivty"), "{e}");
    }

    #[test]
    fn wrong_type_and_bad_value_are_errors() {
        let e = Config::from_yaml("regulation:\n  max_retries: lots\n", "a.yml").unwrap_err();
        assert_eq!(e.key_path, "regulation.max_retries", "{e}");
        assert_eq!(e.line, Some(2));
        let e = Config::from_yaml("session:\n  expiration: 5 parsecs\n", "a.yml").unwrap_err();
        assert_eq!(e.key_path, "session.expiration", "{e}");
        let e = Config::from_yaml("server:\n  address: http://x\n", "a.yml").unwrap_err();
        assert_eq!(e.key_path, "server.address", "{e}");
        let e =
            Config::from_yaml("access_control:\n  default_policy: maybe\n", "a.yml").unwrap_err();
        assert_eq!(e.key_path, "access_control.default_policy", "{e}");
    }

    #[test]
    fn validation_names_key_paths() {
        let c = Config::from_yaml(
            "session:\n  cookies:\n    - domain: halosdev\n      name: 's=x'\n      authelia_url: https://evil.example/sso\naccess_control:\n  rules:\n    - domain: a.b\n      resources: ['(']\n      policy: deny\n",
            "a.yml",
        )
        .unwrap();
        let errs = c.validate("a.yml");
        let paths: Vec<_> = errs.iter().map(|e| e.key_path.as_str()).collect();
        assert!(paths.contains(&"session.cookies[0].domain"), "{paths:?}");
        // A cookie name with `=` would let `s=x=ID` in another cookie pass for a session.
        assert!(paths.contains(&"session.cookies[0].name"), "{paths:?}");
        assert!(
            paths.contains(&"session.cookies[0].authelia_url"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"access_control.rules[0].resources"),
            "{paths:?}"
        );
    }

    #[test]
    fn env_overrides_and_file_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut c = Config::default();
        let errs = c.apply_env(&env(&[
            ("AUTHD_SESSION_INACTIVITY", "5m"),
            ("AUTHD_SERVER_ADDRESS", "tcp://0.0.0.0:9999/auth"),
            ("AUTHD_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
            ("AUTHD_STORAGE_REDIS_URL", "redis://127.0.0.1:6380/1"),
            ("AUTHD_STORAGE_REDIS_DATABASE_INDEX", "4"),
            ("AUTHD_STORAGE_REDIS_PASSWORD_FILE", pw.to_str().unwrap()),
            ("PATH", "/usr/bin"),
        ]));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.session.inactivity.as_secs(), 300);
        assert_eq!(c.server.address.path_prefix, "/auth");
        assert_eq!(c.server.trusted_proxies.len(), 2);
        let redis = c.storage.redis.as_ref().unwrap();
        assert_eq!(redis.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(redis.database_index, Some(4));
        // secrets never in Debug
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let mut c = Config::default();
        let errs = c.apply_env(&env(&[("AUTHD_SESION_NAME", "x")]));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key_path, "AUTHD_SESION_NAME");
        let errs = c.apply_env(&env(&[("AUTHD_SESSION_INACTIVITY", "soon")]));
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn load_reports_every_problem_and_missing_optional_file_is_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&dir.path().join("absent.yml"), true, &[]).unwrap();
        assert_eq!(c.session.name, "halos_session");
        assert!(Config::load(&dir.path().join("absent.yml"), false, &[]).is_err());
        let p = dir.path().join("authd.yml");
        std::fs::write(&p, "server:\n  adress: tcp://127.0.0.1:1/sso\n").unwrap();
        let e = Config::load(&p, true, &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&p.display().to_string()) && text.contains(":2"),
            "{text}"
        );
    }

    #[test]
    fn listen_address_forms() {
        let a = ServerAddress::parse("unix:///run/halos-authd/authd.sock/sso").unwrap();
        assert_eq!(
            a.listen,
            ListenAddress::Unix("/run/halos-authd/authd.sock".into())
        );
        assert_eq!(a.path_prefix, "/sso");
        let a = ServerAddress::parse("tcp://:9091/").unwrap();
        assert_eq!(a.path_prefix, "");
        assert!(ServerAddress::parse("tcp://[::1]:9091/sso").is_ok());
        assert!(ServerAddress::parse("tcp://localhost:x").is_err());
    }

    #[test]
    fn host_within_is_label_safe() {
        assert!(host_within("halos.local", "halos.local"));
        assert!(host_within("app.halos.local", "halos.local"));
        assert!(host_within("APP.Halos.Local", "halos.local"));
        assert!(!host_within("evilhalos.local", "halos.local"));
        assert!(!host_within("halos.local.evil.example", "halos.local"));
    }
}
