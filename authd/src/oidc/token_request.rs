//! The token endpoint's rules, as pure functions: client authentication (RFC 6749 §2.3),
//! grant parsing, and the checks that bind an authorization code to its client,
//! redirect URI and PKCE challenge (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700 §2.1.1,
//! §4.14). Single use and replay revocation need atomic storage and are the storage
//! layer's job: it looks codes and tokens up by [`super::tokens::token_hash`].

use std::sync::Arc;

use argon2::Block;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authorize::AuthorizationRequest;
use super::claims::AuthMethods;
use super::clients::{ClientRegistry, GrantType, OidcClient, TokenAuthMethod};
use super::error::OAuthError;
use super::pkce;
use super::scope::{Scope, Scopes};
use crate::secret::Secret;
use crate::users::User;

/// An error answered by the token (or introspection/revocation) endpoint as
/// `{"error": …, "error_description": …}` (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub error: OAuthError,
    pub description: &'static str,
}

impl TokenError {
    pub const fn new(error: OAuthError, description: &'static str) -> Self {
        Self { error, description }
    }

    /// 401 for `invalid_client` (with `WWW-Authenticate: Basic` when the client tried
    /// Basic), 400 otherwise (RFC 6749 §5.2).
    pub fn status(&self) -> u16 {
        if self.error == OAuthError::InvalidClient {
            401
        } else {
            400
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error.as_str(), "error_description": self.description})
    }
}

fn invalid_client(d: &'static str) -> TokenError {
    TokenError::new(OAuthError::InvalidClient, d)
}

fn invalid_request(d: &'static str) -> TokenError {
    TokenError::new(OAuthError::InvalidRequest, d)
}

fn invalid_grant(d: &'static str) -> TokenError {
    TokenError::new(OAuthError::InvalidGrant, d)
}

/// Form parameters; empty values count as absent and repeats are refused (RFC 6749 §3.2).
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, TokenError> {
    let mut it = params
        .iter()
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str());
    let first = it.next();
    if it.next().is_some() {
        return Err(invalid_request("A parameter is repeated."));
    }
    Ok(first)
}

/// The credentials a client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `Authorization: Basic` (RFC 6749 §2.3.1).
    Basic { client_id: String, secret: Secret },
    /// `client_id` and `client_secret` in the form body.
    Post { client_id: String, secret: Secret },
    /// `client_id` only (public clients).
    None { client_id: String },
}

impl ClientCredentials {
    /// Extracts the credentials from the `Authorization` header (if any) and the form.
    /// Using two methods at once is refused (RFC 6749 §2.3: "MUST NOT use more than one").
    pub fn from_request(
        authorization: Option<&str>,
        params: &[(String, String)],
    ) -> Result<ClientCredentials, TokenError> {
        let body_id = single(params, "client_id")?;
        let body_secret = single(params, "client_secret")?;
        let basic = authorization.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
        if let Some(b64) = basic {
            if body_secret.is_some() {
                return Err(invalid_request(
                    "Use one client authentication method, not two.",
                ));
            }
            let (id, secret) = parse_basic(b64)?;
            if body_id.is_some_and(|b| b != id) {
                return Err(invalid_client(
                    "The client_id in the body differs from the authenticated client.",
                ));
            }
            return Ok(Self::Basic {
                client_id: id,
                secret,
            });
        }
        match (body_id, body_secret) {
            (Some(id), Some(s)) => Ok(Self::Post {
                client_id: id.to_string(),
                secret: Secret::new(s),
            }),
            (Some(id), None) => Ok(Self::None {
                client_id: id.to_string(),
            }),
            (None, _) => Err(invalid_client("Client authentication is required.")),
        }
    }

    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::None { client_id } => client_id,
        }
    }

    pub fn method(&self) -> TokenAuthMethod {
        match self {
            Self::Basic { .. } => TokenAuthMethod::ClientSecretBasic,
            Self::Post { .. } => TokenAuthMethod::ClientSecretPost,
            Self::None { .. } => TokenAuthMethod::None,
        }
    }

    fn secret(&self) -> Option<&Secret> {
        match self {
            Self::Basic { secret, .. } | Self::Post { secret, .. } => Some(secret),
            Self::None { .. } => None,
        }
    }
}

/// `base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(b64: &str) -> Result<(String, Secret), TokenError> {
    let bad = || invalid_client("Malformed Basic credentials.");
    let raw = STANDARD.decode(b64).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let id = decode(id);
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, Secret::new(decode(secret))))
}

/// Authenticates the client: it must exist, use exactly its registered method
/// (security.md O11) and present the right secret. `blocks` is argon2 scratch memory;
/// when [`OidcClient::secret_check_is_costly`] run this off the async runtime.
pub fn authenticate_client(
    registry: &ClientRegistry,
    creds: &ClientCredentials,
    blocks: &mut Vec<Block>,
) -> Result<Arc<OidcClient>, TokenError> {
    let failed = invalid_client("Client authentication failed.");
    let client = registry.get(creds.client_id()).ok_or(failed.clone())?;
    if creds.method() != client.auth_method {
        return Err(failed);
    }
    match creds.secret() {
        None if client.public => Ok(Arc::clone(client)),
        Some(s) if client.verify_secret(s.expose(), blocks) => Ok(Arc::clone(client)),
        _ => Err(failed),
    }
}

/// A parsed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
    },
    RefreshToken {
        refresh_token: String,
        /// A narrower scope, if asked (RFC 6749 §6).
        scope: Option<Scopes>,
    },
}

impl TokenRequest {
    pub fn parse(params: &[(String, String)]) -> Result<TokenRequest, TokenError> {
        match single(params, "grant_type")? {
            None => Err(invalid_request("The grant_type is missing.")),
            Some("authorization_code") => Ok(Self::AuthorizationCode {
                code: single(params, "code")?
                    .ok_or(invalid_request("The code is missing."))?
                    .to_string(),
                redirect_uri: single(params, "redirect_uri")?.map(str::to_string),
                code_verifier: single(params, "code_verifier")?.map(str::to_string),
            }),
            Some("refresh_token") => {
                let refresh_token = single(params, "refresh_token")?
                    .ok_or(invalid_request("The refresh_token is missing."))?
                    .to_string();
                let scope = match single(params, "scope")? {
                    None => None,
                    Some(s) => match Scopes::parse_param(s) {
                        Ok((known, unknown)) if unknown.is_empty() => Some(known),
                        _ => {
                            return Err(TokenError::new(
                                OAuthError::InvalidScope,
                                "The requested scope exceeds the original grant.",
                            ));
                        }
                    },
                };
                Ok(Self::RefreshToken {
                    refresh_token,
                    scope,
                })
            }
            Some(_) => Err(TokenError::new(
                OAuthError::UnsupportedGrantType,
                "Only authorization_code and refresh_token are supported.",
            )),
        }
    }

    pub fn grant_type(&self) -> GrantType {
        match self {
            Self::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
        }
    }

    /// `unauthorized_client` when the client may not use this grant type.
    pub fn check_client(&self, client: &OidcClient) -> Result<(), TokenError> {
        if client.allows_grant(self.grant_type()) {
            Ok(())
        } else {
            Err(TokenError::new(
                OAuthError::UnauthorizedClient,
                "This client may not use this grant type.",
            ))
        }
    }
}

/// The user must still exist, be enabled and be allowed to use the client (checked at
/// code redemption and at every refresh, security.md X-07 / Pocket ID CVE-2026-43983).
fn check_user(client: &OidcClient, user: Option<&User>) -> Result<(), TokenError> {
    match user {
        Some(u) if !u.disabled && client.user_allowed(&u.groups) => Ok(()),
        _ => Err(invalid_grant("The user is no longer allowed.")),
    }
}

/// What storage keeps for an authorization code (looked up by the code's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub scopes: Scopes,
    pub nonce: Option<String>,
    pub username: String,
    pub sub: String,
    pub auth_time: i64,
    pub auth_methods: AuthMethodsRecord,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// [`AuthMethods`] in a storable shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMethodsRecord {
    pub password: bool,
    pub totp: bool,
    pub webauthn: bool,
    pub webauthn_user_verified: bool,
}

impl From<AuthMethods> for AuthMethodsRecord {
    fn from(a: AuthMethods) -> Self {
        Self {
            password: a.password,
            totp: a.totp,
            webauthn: a.webauthn,
            webauthn_user_verified: a.webauthn_user_verified,
        }
    }
}

impl From<AuthMethodsRecord> for AuthMethods {
    fn from(a: AuthMethodsRecord) -> Self {
        Self {
            password: a.password,
            totp: a.totp,
            webauthn: a.webauthn,
            webauthn_user_verified: a.webauthn_user_verified,
        }
    }
}

/// Who is authorizing, from the session.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub username: &'a str,
    pub sub: &'a str,
    pub auth_time: i64,
    pub auth_methods: AuthMethods,
}

impl CodeGrant {
    /// The grant behind a new code for `req`, valid `lifetime_secs` (≤ 60 s by default).
    pub fn new(req: &AuthorizationRequest, who: Subject<'_>, now: i64, lifetime_secs: i64) -> Self {
        Self {
            client_id: req.client.id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            scopes: req.scopes,
            nonce: req.nonce.clone(),
            username: who.username.to_string(),
            sub: who.sub.to_string(),
            auth_time: who.auth_time,
            auth_methods: who.auth_methods.into(),
            issued_at: now,
            expires_at: now.saturating_add(lifetime_secs),
        }
    }

    /// Checks a redemption by the authenticated `client`. Every failure is
    /// `invalid_grant`: code of another client (O4, F2-07), expired (F2-06), different or
    /// missing `redirect_uri` (X-03), missing or wrong `code_verifier` (F2-03/04), a
    /// verifier for a code issued without a challenge (PKCE downgrade, X-01), and a user
    /// who was disabled or left the allowed groups meanwhile.
    pub fn check_redemption(
        &self,
        client: &OidcClient,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        user: Option<&User>,
        now: i64,
    ) -> Result<(), TokenError> {
        if self.client_id != client.id {
            return Err(invalid_grant("The code was issued to another client."));
        }
        if now >= self.expires_at {
            return Err(invalid_grant("The code has expired."));
        }
        if redirect_uri != Some(self.redirect_uri.as_str()) {
            return Err(invalid_grant("The redirect_uri does not match."));
        }
        match (&self.code_challenge, code_verifier) {
            (Some(c), Some(v)) if pkce::verify_s256(v, c) => {}
            (Some(_), Some(_)) => return Err(invalid_grant("The code_verifier does not match.")),
            (Some(_), None) => return Err(invalid_grant("The code_verifier is missing.")),
            (None, Some(_)) => {
                return Err(invalid_grant(
                    "A code_verifier was sent for a code issued without PKCE.",
                ));
            }
            (None, None) => {}
        }
        check_user(client, user)
    }

    /// Whether this grant yields a refresh token: `offline_access` granted and the
    /// client allowed the refresh_token grant (DESIGN §9).
    pub fn issues_refresh_token(&self, client: &OidcClient) -> bool {
        self.scopes.contains(Scope::OfflineAccess) && client.allows_grant(GrantType::RefreshToken)
    }
}

/// What storage keeps for a refresh token (looked up by its hash; rotation and family
/// revocation on reuse are storage's job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub client_id: String,
    pub scopes: Scopes,
    pub username: String,
    pub sub: String,
    pub auth_time: i64,
    pub auth_methods: AuthMethodsRecord,
    /// Absolute end of the whole family (not extended by rotation).
    pub expires_at: i64,
}

impl RefreshGrant {
    pub fn from_code(code: &CodeGrant, now: i64, lifetime_secs: i64) -> Self {
        Self {
            client_id: code.client_id.clone(),
            scopes: code.scopes,
            username: code.username.clone(),
            sub: code.sub.clone(),
            auth_time: code.auth_time,
            auth_methods: code.auth_methods,
            expires_at: now.saturating_add(lifetime_secs),
        }
    }

    /// Checks a refresh by the authenticated `client` and returns the scopes of the new
    /// tokens: the requested ones if they are within the grant, else `invalid_scope`
    /// (X-08). Another client's token, an expired family or a user no longer allowed →
    /// `invalid_grant` (B-37, O5, X-07).
    pub fn check_refresh(
        &self,
        client: &OidcClient,
        requested: Option<Scopes>,
        user: Option<&User>,
        now: i64,
    ) -> Result<Scopes, TokenError> {
        if self.client_id != client.id {
            return Err(invalid_grant(
                "The refresh token was issued to another client.",
            ));
        }
        if now >= self.expires_at {
            return Err(invalid_grant("The refresh token has expired."));
        }
        check_user(client, user)?;
        match requested {
            None => Ok(self.scopes),
            Some(r) if r.is_subset(self.scopes) && r.contains(Scope::Openid) => Ok(r),
            Some(_) => Err(TokenError::new(
                OAuthError::InvalidScope,
                "The requested scope exceeds the original grant.",
            )),
        }
    }
}

/// The successful token response body (RFC 6749 §5.1, OIDC Core §3.1.3.3). Send it with
/// `Cache-Control: no-store`.
pub fn token_response(
    access_token: &str,
    expires_in: i64,
    scopes: Scopes,
    id_token: Option<&str>,
    refresh_token: Option<&str>,
) -> Value {
    let mut v = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scopes.to_string(),
    });
    if let Some(t) = id_token {
        v["id_token"] = json!(t);
    }
    if let Some(t) = refresh_token {
        v["refresh_token"] = json!(t);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OneOrMany;
    use crate::oidc::claims::tests::user;
    use crate::oidc::clients::tests::{PBKDF2_SHA512, cfg};

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    fn registry() -> ClientRegistry {
        let mut app1 = cfg("app1");
        app1.token_endpoint_auth_method = Some("client_secret_basic".into());
        app1.client_secret = Some(Secret::new(PBKDF2_SHA512));
        app1.scopes = Some(OneOrMany(
            ["openid", "profile", "offline_access"]
                .map(String::from)
                .to_vec(),
        ));
        let app2 = cfg("app2"); // client_secret_post, secret "s3cret"
        let mut spa = cfg("spa");
        spa.public = Some(true);
        spa.client_secret = None;
        let mut nort = cfg("nort");
        nort.grant_types = Some(OneOrMany(vec!["authorization_code".into()]));
        let mut admins = cfg("admins-only");
        admins.allowed_groups = Some(OneOrMany(vec!["admins".into()]));
        ClientRegistry::build(
            [app1, app2, spa, nort, admins]
                .into_iter()
                .map(|c| (c.client_id.clone(), c)),
            |_| Ok(Secret::new("x")),
        )
    }

    fn auth(
        reg: &ClientRegistry,
        header: Option<&str>,
        body: &[(&str, &str)],
    ) -> Result<Arc<OidcClient>, TokenError> {
        let creds = ClientCredentials::from_request(header, &p(body))?;
        authenticate_client(reg, &creds, &mut Vec::new())
    }

    #[test]
    fn client_authentication_methods() {
        let reg = registry();
        // Basic, with a passlib pbkdf2-sha512 digest.
        let h = basic("app1", "halos-client-secret");
        assert_eq!(auth(&reg, Some(&h), &[]).unwrap().id, "app1");
        let lower = h.replacen("Basic", "basic", 1);
        assert_eq!(
            auth(&reg, Some(&lower), &[("client_id", "app1")])
                .unwrap()
                .id,
            "app1"
        );
        // Post, plaintext.
        assert_eq!(
            auth(
                &reg,
                None,
                &[("client_id", "app2"), ("client_secret", "s3cret")]
            )
            .unwrap()
            .id,
            "app2"
        );
        // None, public.
        assert_eq!(auth(&reg, None, &[("client_id", "spa")]).unwrap().id, "spa");
        // A Bearer header is not client authentication.
        assert_eq!(
            auth(&reg, Some("Bearer xyz"), &[("client_id", "spa")])
                .unwrap()
                .id,
            "spa"
        );
    }

    #[test]
    fn client_authentication_failures() {
        let reg = registry();
        let ic = |r: Result<Arc<OidcClient>, TokenError>| r.unwrap_err();
        let e = ic(auth(&reg, Some(&basic("app1", "wrong")), &[]));
        assert_eq!(e.error, OAuthError::InvalidClient);
        assert_eq!(e.status(), 401);
        // Registered for basic, tried post (and vice versa).
        assert_eq!(
            ic(auth(
                &reg,
                None,
                &[
                    ("client_id", "app1"),
                    ("client_secret", "halos-client-secret")
                ]
            ))
            .error,
            OAuthError::InvalidClient
        );
        assert_eq!(
            ic(auth(&reg, Some(&basic("app2", "s3cret")), &[])).error,
            OAuthError::InvalidClient
        );
        // Confidential client with no secret at all.
        assert_eq!(
            ic(auth(&reg, None, &[("client_id", "app2")])).error,
            OAuthError::InvalidClient
        );
        // Public client presenting a secret.
        assert_eq!(
            ic(auth(
                &reg,
                None,
                &[("client_id", "spa"), ("client_secret", "x")]
            ))
            .error,
            OAuthError::InvalidClient
        );
        // Basic id differs from body client_id (O11).
        assert_eq!(
            ic(auth(
                &reg,
                Some(&basic("app1", "halos-client-secret")),
                &[("client_id", "app2")]
            ))
            .error,
            OAuthError::InvalidClient
        );
        // Two methods at once.
        assert_eq!(
            ic(auth(
                &reg,
                Some(&basic("app1", "halos-client-secret")),
                &[("client_secret", "s3cret")]
            ))
            .error,
            OAuthError::InvalidRequest
        );
        // Unknown client, no client, malformed Basic.
        assert_eq!(
            ic(auth(
                &reg,
                None,
                &[("client_id", "nope"), ("client_secret", "x")]
            ))
            .error,
            OAuthError::InvalidClient
        );
        assert_eq!(ic(auth(&reg, None, &[])).error, OAuthError::InvalidClient);
        for h in ["Basic !!!", "Basic Zm9v", "Basic OnNlY3JldA=="] {
            assert_eq!(
                ic(auth(&reg, Some(h), &[])).error,
                OAuthError::InvalidClient,
                "{h}"
            );
        }
        // Repeated client_id.
        assert_eq!(
            ic(auth(
                &reg,
                None,
                &[("client_id", "spa"), ("client_id", "spa")]
            ))
            .error,
            OAuthError::InvalidRequest
        );
    }

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        let creds = ClientCredentials::from_request(
            Some(&format!("Basic {}", STANDARD.encode("my%20app:p%3Aw+d"))),
            &[],
        )
        .unwrap();
        assert_eq!(creds.client_id(), "my app");
        match creds {
            ClientCredentials::Basic { secret, .. } => assert_eq!(secret.expose(), "p:w d"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_request_parsing() {
        assert_eq!(
            TokenRequest::parse(&p(&[
                ("grant_type", "authorization_code"),
                ("code", "hac_x"),
                ("redirect_uri", "https://a/cb"),
                ("code_verifier", VERIFIER),
            ]))
            .unwrap(),
            TokenRequest::AuthorizationCode {
                code: "hac_x".into(),
                redirect_uri: Some("https://a/cb".into()),
                code_verifier: Some(VERIFIER.into())
            }
        );
        let r = TokenRequest::parse(&p(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "hrt_x"),
            ("scope", "profile openid"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            TokenRequest::RefreshToken {
                refresh_token: "hrt_x".into(),
                scope: Some(Scope::Openid.into_scopes().with(Scope::Profile))
            }
        );
        let err = |pairs: &[(&str, &str)]| TokenRequest::parse(&p(pairs)).unwrap_err().error;
        assert_eq!(err(&[]), OAuthError::InvalidRequest);
        assert_eq!(
            err(&[("grant_type", "password")]),
            OAuthError::UnsupportedGrantType
        );
        assert_eq!(
            err(&[("grant_type", "client_credentials")]),
            OAuthError::UnsupportedGrantType
        );
        assert_eq!(
            err(&[("grant_type", "implicit")]),
            OAuthError::UnsupportedGrantType
        );
        assert_eq!(
            err(&[("grant_type", "authorization_code")]),
            OAuthError::InvalidRequest
        );
        assert_eq!(
            err(&[("grant_type", "refresh_token")]),
            OAuthError::InvalidRequest
        );
        assert_eq!(
            err(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("scope", "openid admin")
            ]),
            OAuthError::InvalidScope
        );
        assert_eq!(
            err(&[
                ("grant_type", "authorization_code"),
                ("code", "a"),
                ("code", "b")
            ]),
            OAuthError::InvalidRequest
        );
    }

    #[test]
    fn grant_type_per_client() {
        let reg = registry();
        let refresh = TokenRequest::RefreshToken {
            refresh_token: "x".into(),
            scope: None,
        };
        assert!(refresh.check_client(reg.get("app1").unwrap()).is_ok());
        assert_eq!(
            refresh
                .check_client(reg.get("nort").unwrap())
                .unwrap_err()
                .error,
            OAuthError::UnauthorizedClient
        );
    }

    fn grant(challenge: Option<&str>) -> CodeGrant {
        CodeGrant {
            client_id: "app1".into(),
            redirect_uri: "https://app1.halos.local/cb".into(),
            code_challenge: challenge.map(str::to_string),
            scopes: Scope::Openid.into_scopes().with(Scope::OfflineAccess),
            nonce: Some("n".into()),
            username: "alice".into(),
            sub: "sub-alice".into(),
            auth_time: 900,
            auth_methods: AuthMethodsRecord {
                password: true,
                ..Default::default()
            },
            issued_at: 1_000,
            expires_at: 1_060,
        }
    }

    #[test]
    fn code_redemption_binding() {
        let reg = registry();
        let app1 = reg.get("app1").unwrap();
        let app2 = reg.get("app2").unwrap();
        let alice = user("alice", "", "", &[]);
        let cb = Some("https://app1.halos.local/cb");
        let g = grant(Some(CHALLENGE));
        let check = |g: &CodeGrant, c: &OidcClient, r: Option<&str>, v: Option<&str>, now| {
            g.check_redemption(c, r, v, Some(&alice), now)
        };
        assert_eq!(check(&g, app1, cb, Some(VERIFIER), 1_059), Ok(()));
        let ig = |r: Result<(), TokenError>| r.unwrap_err().error;
        assert_eq!(
            ig(check(&g, app2, cb, Some(VERIFIER), 1_001)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(check(&g, app1, cb, Some(VERIFIER), 1_060)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(check(&g, app1, None, Some(VERIFIER), 1_001)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(check(
                &g,
                app1,
                Some("https://app1.halos.local/cb/"),
                Some(VERIFIER),
                1_001
            )),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(check(&g, app1, cb, None, 1_001)),
            OAuthError::InvalidGrant
        );
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
        assert_eq!(
            ig(check(&g, app1, cb, Some(wrong), 1_001)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(check(&g, app1, cb, Some(&VERIFIER[..42]), 1_001)),
            OAuthError::InvalidGrant
        );
        // Downgrade: no challenge at authorize, verifier at token (X-01).
        let nopkce = grant(None);
        assert_eq!(
            ig(check(&nopkce, app1, cb, Some(VERIFIER), 1_001)),
            OAuthError::InvalidGrant
        );
        assert_eq!(check(&nopkce, app1, cb, None, 1_001), Ok(()));
        // User disabled or gone.
        let mut carol = user("alice", "", "", &[]);
        carol.disabled = true;
        assert_eq!(
            g.check_redemption(app1, cb, Some(VERIFIER), Some(&carol), 1_001)
                .unwrap_err()
                .error,
            OAuthError::InvalidGrant
        );
        assert_eq!(
            g.check_redemption(app1, cb, Some(VERIFIER), None, 1_001)
                .unwrap_err()
                .error,
            OAuthError::InvalidGrant
        );
        // Refresh token only with offline_access and the refresh grant.
        assert!(g.issues_refresh_token(app1));
        assert!(!g.issues_refresh_token(reg.get("nort").unwrap()));
        let mut no_offline = grant(None);
        no_offline.scopes = Scope::Openid.into_scopes();
        assert!(!no_offline.issues_refresh_token(app1));
    }

    #[test]
    fn code_grant_from_request_and_storage_round_trip() {
        let reg = registry();
        let params = p(&[
            ("client_id", "app2"),
            ("redirect_uri", "https://app2.halos.local/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("nonce", "abc"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]);
        let req = AuthorizationRequest::parse(&params, &reg).unwrap();
        let who = Subject {
            username: "alice",
            sub: "sub-alice",
            auth_time: 5,
            auth_methods: AuthMethods {
                password: true,
                totp: true,
                ..Default::default()
            },
        };
        let g = CodeGrant::new(&req, who, 100, 60);
        assert_eq!(g.expires_at, 160);
        assert_eq!(g.client_id, "app2");
        assert_eq!(g.nonce.as_deref(), Some("abc"));
        assert_eq!(
            AuthMethods::from(g.auth_methods).amr(),
            ["pwd", "otp", "mfa"]
        );
        let json = serde_json::to_string(&g).unwrap();
        assert!(json.contains(r#""scopes":"openid email""#), "{json}");
        let back: CodeGrant = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
        assert!(serde_json::from_str::<Scopes>(r#""openid admin""#).is_err());
    }

    #[test]
    fn refresh_checks() {
        let reg = registry();
        let app1 = reg.get("app1").unwrap();
        let alice = user("alice", "", "", &[]);
        let rg = RefreshGrant::from_code(&grant(None), 1_000, 3_600);
        assert_eq!(rg.expires_at, 4_600);
        let all = rg.scopes;
        assert_eq!(rg.check_refresh(app1, None, Some(&alice), 2_000), Ok(all));
        let openid = Scope::Openid.into_scopes();
        assert_eq!(
            rg.check_refresh(app1, Some(openid), Some(&alice), 2_000),
            Ok(openid)
        );
        let ig = |r: Result<Scopes, TokenError>| r.unwrap_err().error;
        assert_eq!(
            ig(rg.check_refresh(app1, Some(openid.with(Scope::Profile)), Some(&alice), 2_000)),
            OAuthError::InvalidScope
        );
        assert_eq!(
            ig(rg.check_refresh(reg.get("app2").unwrap(), None, Some(&alice), 2_000)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(rg.check_refresh(app1, None, Some(&alice), 4_600)),
            OAuthError::InvalidGrant
        );
        assert_eq!(
            ig(rg.check_refresh(app1, None, None, 2_000)),
            OAuthError::InvalidGrant
        );
        // Group membership is re-checked at every refresh.
        let admins_only = reg.get("admins-only").unwrap();
        let mut g2 = rg.clone();
        g2.client_id = "admins-only".into();
        let admin = user("alice", "", "", &["admins"]);
        assert!(
            g2.check_refresh(admins_only, None, Some(&admin), 2_000)
                .is_ok()
        );
        assert_eq!(
            ig(g2.check_refresh(admins_only, None, Some(&alice), 2_000)),
            OAuthError::InvalidGrant
        );
    }

    #[test]
    fn responses() {
        let e = TokenError::new(OAuthError::InvalidGrant, "The code has expired.");
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.body(),
            json!({"error": "invalid_grant", "error_description": "The code has expired."})
        );
        let v = token_response(
            "hat_a",
            3600,
            Scope::Openid.into_scopes(),
            Some("jwt"),
            None,
        );
        assert_eq!(
            v,
            json!({"access_token": "hat_a", "token_type": "Bearer", "expires_in": 3600, "scope": "openid", "id_token": "jwt"})
        );
        let v = token_response(
            "hat_a",
            60,
            Scope::Openid.into_scopes(),
            None,
            Some("hrt_b"),
        );
        assert_eq!(v["refresh_token"], "hrt_b");
        assert!(v.get("id_token").is_none());
    }
}
