//! The authorization endpoint's rules, as pure functions.
//!
//! [`AuthorizationRequest::parse`] validates the parameters (query for GET, form for POST)
//! in the order the conformance suite and RFC 6749 §4.1.2.1 require:
//!
//! 1. `client_id` known and `redirect_uri` registered *exactly* — otherwise a
//!    [`PageError`]: show an HTML error page, never redirect (O1, B-30, DYN-07);
//! 2. then every other problem is a [`RedirectError`] to that validated URI with
//!    `error`, `state` and `iss` (O2, RFC 9207): `request` → `request_not_supported`,
//!    `request_uri` → `request_uri_not_supported`, `response_type` ≠ `code` →
//!    `unsupported_response_type`, no `openid` scope → `invalid_scope`, PKCE problems
//!    and malformed `prompt`/`max_age`/`nonce` → `invalid_request`.
//!
//! [`AuthorizationRequest::decide`] then says what to do with the browser's session:
//! log in (again), ask for consent, issue a code, or answer an error (`prompt=none`).

use std::sync::Arc;

use super::clients::{ClientRegistry, ConsentMode, OidcClient};
use super::error::{OAuthError, safe_description};
use super::issuer::Issuer;
use super::pkce;
use super::scope::{Scope, Scopes};
use crate::config::Policy;
use crate::users::User;

/// Longest `state` we echo and `nonce` we copy (security.md O6 asks for ≥ 512).
pub const MAX_STATE_LEN: usize = 2048;
pub const MAX_NONCE_LEN: usize = 2048;

/// Parameters whose repetition is an error (RFC 6749 §3.1: "MUST NOT be included more
/// than once"). Unknown parameters are ignored, repeated or not (§3.1, B-22).
const SINGLE_VALUED: [&str; 17] = [
    "client_id",
    "redirect_uri",
    "state",
    "response_type",
    "response_mode",
    "scope",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "id_token_hint",
    "login_hint",
    "request",
    "request_uri",
    "display",
    "acr_values",
];

/// An error that must be shown to the user as a page (HTTP 400, no `Location`): the
/// client or its redirect URI could not be established, so redirecting would make us an
/// open redirector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("The request has no client_id.")]
    MissingClientId,
    #[error("Unknown client.")]
    UnknownClient(String),
    #[error("The parameter {0} is repeated.")]
    RepeatedParameter(&'static str),
    #[error("The request has no redirect_uri.")]
    MissingRedirectUri,
    #[error("The redirect_uri is not registered for this client.")]
    UnregisteredRedirectUri {
        client_id: String,
        redirect_uri: String,
    },
    #[error("The state parameter is too long.")]
    StateTooLong,
}

/// An error returned to the client by redirecting to its validated `redirect_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectError {
    pub redirect_uri: String,
    pub error: OAuthError,
    pub description: String,
    pub state: Option<String>,
}

impl RedirectError {
    /// The `Location` header: the redirect URI (its query kept) plus `error`,
    /// `error_description`, `state` (when sent) and `iss`.
    pub fn location(&self, issuer: &Issuer) -> String {
        let desc = safe_description(&self.description);
        let mut pairs: Vec<(&str, &str)> = vec![("error", self.error.as_str())];
        if !desc.is_empty() {
            pairs.push(("error_description", &desc));
        }
        if let Some(s) = &self.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", issuer.as_str()));
        append_query(&self.redirect_uri, &pairs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationError {
    Page(PageError),
    Redirect(RedirectError),
}

/// Appends parameters to a URI's query, keeping any query it has unchanged
/// (RFC 6749 §3.1.2, conformance CC-06). Registered URIs never have a fragment.
pub fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return uri.to_string();
    }
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    let sep = match uri.rfind('?') {
        None => "?",
        Some(_) if uri.ends_with('?') || uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{uri}{sep}{q}")
}

/// `prompt` values (OIDC Core §3.1.2.1). Unknown values are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
    pub select_account: bool,
}

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Arc<OidcClient>,
    /// Exactly as sent, and registered.
    pub redirect_uri: String,
    /// Requested scopes the client may have (others are dropped, RFC 6749 §3.3).
    pub scopes: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// An S256 challenge (the only method accepted).
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    /// Unverified; check with `SigningKeys::verify_id_token_hint` and pass the result to
    /// [`AuthorizationRequest::decide`].
    pub id_token_hint: Option<String>,
    pub login_hint: Option<String>,
}

struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn new(raw: &'a [(String, String)]) -> Self {
        // RFC 6749 §3.1: parameters without a value are treated as omitted.
        Self {
            pairs: raw
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    fn count(&self, name: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| *k == name).count()
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

impl AuthorizationRequest {
    /// Validates an authorization request against the registry.
    pub fn parse(
        raw: &[(String, String)],
        registry: &ClientRegistry,
    ) -> Result<AuthorizationRequest, AuthorizationError> {
        let p = Params::new(raw);
        let page = |e| Err(AuthorizationError::Page(e));

        // 1. Client and redirect URI: errors here are pages.
        for name in ["client_id", "redirect_uri", "state"] {
            if p.count(name) > 1 {
                return page(PageError::RepeatedParameter(name));
            }
        }
        let Some(client_id) = p.get("client_id") else {
            return page(PageError::MissingClientId);
        };
        let Some(client) = registry.get(client_id) else {
            return page(PageError::UnknownClient(client_id.to_string()));
        };
        // Always required: we never guess among registered URIs (DYN-04, F2-09).
        let Some(redirect_uri) = p.get("redirect_uri") else {
            return page(PageError::MissingRedirectUri);
        };
        if !client.redirect_uri_registered(redirect_uri) {
            return page(PageError::UnregisteredRedirectUri {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
            });
        }
        let state = p.get("state");
        if state.is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return page(PageError::StateTooLong);
        }

        // 2. Everything else is redirected to the validated URI.
        let fail = |error: OAuthError, description: &str| {
            Err(AuthorizationError::Redirect(RedirectError {
                redirect_uri: redirect_uri.to_string(),
                error,
                description: description.to_string(),
                state: state.map(str::to_string),
            }))
        };

        if p.get("request").is_some() {
            return fail(
                OAuthError::RequestNotSupported,
                "Request objects are not supported.",
            );
        }
        if p.get("request_uri").is_some() {
            return fail(
                OAuthError::RequestUriNotSupported,
                "The request_uri parameter is not supported.",
            );
        }
        if let Some(name) = SINGLE_VALUED.iter().find(|n| p.count(n) > 1) {
            return fail(
                OAuthError::InvalidRequest,
                &format!("The parameter {name} is repeated."),
            );
        }
        match p.get("response_type") {
            None => {
                return fail(OAuthError::InvalidRequest, "The response_type is missing.");
            }
            Some("code") => {}
            Some(_) => {
                return fail(
                    OAuthError::UnsupportedResponseType,
                    "Only the authorization code flow (response_type=code) is supported.",
                );
            }
        }
        if let Some(mode) = p.get("response_mode")
            && mode != "query"
        {
            return fail(
                OAuthError::InvalidRequest,
                "Only response_mode=query is supported.",
            );
        }

        // Scopes: openid required; others limited to what the client may have.
        let Some(scope) = p.get("scope") else {
            return fail(OAuthError::InvalidScope, "The openid scope is required.");
        };
        let Ok((requested, _unknown)) = Scopes::parse_param(scope) else {
            return fail(
                OAuthError::InvalidScope,
                "The scope parameter is malformed.",
            );
        };
        if !requested.contains(Scope::Openid) {
            return fail(OAuthError::InvalidScope, "The openid scope is required.");
        }
        let scopes = requested.intersection(client.scopes);
        if !scopes.contains(Scope::Openid) {
            return fail(
                OAuthError::InvalidScope,
                "This client may not use the openid scope.",
            );
        }

        // PKCE (RFC 7636, RFC 9700 §2.1.1): S256 only; required for public clients and
        // for clients with require_pkce.
        let challenge = p.get("code_challenge");
        let method = p.get("code_challenge_method");
        let code_challenge = match challenge {
            Some(c) => {
                if pkce::check_method(method).is_err() {
                    return fail(
                        OAuthError::InvalidRequest,
                        "Only code_challenge_method=S256 is supported.",
                    );
                }
                if !pkce::valid_s256_challenge(c) {
                    return fail(
                        OAuthError::InvalidRequest,
                        "The code_challenge is malformed.",
                    );
                }
                Some(c.to_string())
            }
            None if method.is_some() => {
                return fail(
                    OAuthError::InvalidRequest,
                    "code_challenge_method was sent without a code_challenge.",
                );
            }
            None if client.require_pkce => {
                return fail(
                    OAuthError::InvalidRequest,
                    "This client must use PKCE (code_challenge with S256).",
                );
            }
            None => None,
        };

        // prompt: `none` cannot be combined with another value.
        let mut prompt = Prompt::default();
        if let Some(v) = p.get("prompt") {
            for tok in v.split(' ').filter(|t| !t.is_empty()) {
                match tok {
                    "none" => prompt.none = true,
                    "login" => prompt.login = true,
                    "consent" => prompt.consent = true,
                    "select_account" => prompt.select_account = true,
                    _ => {}
                }
            }
            if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
                return fail(
                    OAuthError::InvalidRequest,
                    "prompt=none cannot be combined with other prompt values.",
                );
            }
        }

        let max_age = match p.get("max_age") {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 && v.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => {
                    return fail(
                        OAuthError::InvalidRequest,
                        "max_age must be a non-negative integer.",
                    );
                }
            },
        };

        let nonce = p.get("nonce");
        if nonce.is_some_and(|n| n.len() > MAX_NONCE_LEN) {
            return fail(OAuthError::InvalidRequest, "The nonce is too long.");
        }

        Ok(AuthorizationRequest {
            client: Arc::clone(client),
            redirect_uri: redirect_uri.to_string(),
            scopes,
            state: state.map(str::to_string),
            nonce: nonce.map(str::to_string),
            code_challenge,
            prompt,
            max_age,
            id_token_hint: p.get("id_token_hint").map(str::to_string),
            login_hint: p.get("login_hint").map(str::to_string),
        })
    }

    /// An error response for this request (e.g. `access_denied` when the user declines
    /// consent).
    pub fn error(&self, error: OAuthError, description: &str) -> RedirectError {
        RedirectError {
            redirect_uri: self.redirect_uri.clone(),
            error,
            description: description.to_string(),
            state: self.state.clone(),
        }
    }

    /// The success `Location`: redirect URI + `code`, `state` (when sent) and `iss`.
    pub fn success_location(&self, code: &str, issuer: &Issuer) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![("code", code)];
        if let Some(s) = &self.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", issuer.as_str()));
        append_query(&self.redirect_uri, &pairs)
    }

    /// What to do with this request given the browser's session.
    pub fn decide(&self, ctx: &DecisionContext<'_>) -> Decision {
        let prompt_none = self.prompt.none;
        let err = |e: OAuthError, d: &str| Decision::Error(self.error(e, d));
        let two_factor = self.client.authorization_policy == Policy::TwoFactor;
        let login = |reauthenticate: bool| {
            if prompt_none {
                err(OAuthError::LoginRequired, "The user must log in.")
            } else {
                Decision::Login {
                    reauthenticate,
                    two_factor,
                }
            }
        };

        let hinted_sub = match &ctx.id_token_hint {
            HintStatus::Absent => None,
            HintStatus::Invalid => {
                return err(
                    OAuthError::InvalidRequest,
                    "The id_token_hint is not valid.",
                );
            }
            HintStatus::Valid { sub } => Some(sub.as_str()),
        };

        let Some(session) = ctx.session.filter(|s| !s.user.disabled && s.level > 0) else {
            return login(false);
        };
        if hinted_sub.is_some_and(|h| h != session.sub) {
            // A different user is logged in than the one the client expects.
            return login(true);
        }

        // prompt=login and max_age ask for a fresh authentication: one that happened
        // after this request first arrived satisfies them (no login loop).
        let fresh = session.auth_time >= ctx.flow_started_at;
        let too_old = self
            .max_age
            .is_some_and(|m| ctx.now.saturating_sub(session.auth_time) > m);
        if (self.prompt.login || too_old) && !fresh {
            return login(true);
        }

        if !self.client.user_allowed(&session.user.groups) {
            return err(
                OAuthError::AccessDenied,
                "The user is not allowed to use this application.",
            );
        }

        if two_factor && session.level < 2 {
            if prompt_none {
                return err(
                    OAuthError::InteractionRequired,
                    "A second factor is required.",
                );
            }
            return Decision::Login {
                reauthenticate: false,
                two_factor: true,
            };
        }

        let consent_needed = self.prompt.consent
            || match self.client.consent_mode {
                ConsentMode::Implicit => false,
                ConsentMode::Explicit => true,
                ConsentMode::PreConfigured { .. } => !ctx.consent_on_record,
            };
        if consent_needed && !ctx.consent_given_now {
            if prompt_none {
                return err(OAuthError::ConsentRequired, "The user must consent.");
            }
            return Decision::Consent;
        }
        Decision::Issue
    }
}

/// The result of checking `id_token_hint` with `SigningKeys::verify_id_token_hint`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HintStatus {
    #[default]
    Absent,
    /// Signature, alg, kid or issuer wrong: never honoured (security.md X-17).
    Invalid,
    Valid {
        sub: String,
    },
}

/// The browser's authenticated session, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    pub user: &'a User,
    /// The user's stable subject identifier.
    pub sub: &'a str,
    /// When the user last actively authenticated (unix seconds).
    pub auth_time: i64,
    /// 1 = one factor, 2 = two factors (0 = not authenticated).
    pub level: u8,
}

#[derive(Debug, Clone, Default)]
pub struct DecisionContext<'a> {
    pub now: i64,
    /// When this authorization request first arrived; the HTTP layer keeps it across the
    /// login round-trip so that a login made for this request satisfies `prompt=login`
    /// and `max_age`.
    pub flow_started_at: i64,
    pub session: Option<SessionView<'a>>,
    pub id_token_hint: HintStatus,
    /// A remembered (pre-configured) consent covers this client and these scopes.
    pub consent_on_record: bool,
    /// The user approved this very request on the consent page.
    pub consent_given_now: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the browser to the portal; come back here afterwards.
    Login {
        /// Ask for credentials even though a session exists (`prompt=login`, `max_age`,
        /// another user hinted).
        reauthenticate: bool,
        /// The client needs a two-factor session.
        two_factor: bool,
    },
    /// Show the consent page.
    Consent,
    /// Issue an authorization code and redirect with [`AuthorizationRequest::success_location`].
    Issue,
    /// Redirect with this error.
    Error(RedirectError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OneOrMany;
    use crate::oidc::claims::tests::user;
    use crate::oidc::clients::tests::cfg;
    use crate::secret::Secret;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const APP1_CB: &str = "https://app1.halos.local/oauth/callback";

    fn registry() -> ClientRegistry {
        let mut app1 = cfg("app1");
        app1.redirect_uris = OneOrMany(vec![APP1_CB.into()]);
        app1.scopes = Some(OneOrMany(
            ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec(),
        ));
        let mut spa = cfg("spa");
        spa.public = Some(true);
        spa.client_secret = None;
        spa.redirect_uris = OneOrMany(vec!["https://spa.halos.local/cb".into()]);
        let mut q = cfg("q");
        q.redirect_uris = OneOrMany(vec!["https://q.halos.local/cb?tenant=a".into()]);
        let mut strict = cfg("strict");
        strict.require_pkce = Some(true);
        strict.consent_mode = Some("explicit".into());
        strict.authorization_policy = Some("two_factor".into());
        strict.allowed_groups = Some(OneOrMany(vec!["admins".into()]));
        let mut remembered = cfg("remembered");
        remembered.consent_mode = Some("pre-configured".into());
        let reg = ClientRegistry::build(
            [app1, spa, q, strict, remembered]
                .into_iter()
                .map(|c| (format!("{}.yml", c.client_id), c)),
            |_| Ok(Secret::new("x")),
        );
        assert!(reg.errors().is_empty(), "{:?}", reg.errors());
        reg
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("client_id", "app1"),
            ("redirect_uri", APP1_CB),
            ("response_type", "code"),
            ("scope", "openid profile"),
            ("state", "s"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut b = base();
        for (k, v) in extra {
            if let Some(e) = b.iter_mut().find(|(bk, _)| bk == k) {
                e.1 = v;
            } else {
                b.push((k, v));
            }
        }
        params(&b)
    }

    fn without(name: &str) -> Vec<(String, String)> {
        params(
            &base()
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>(),
        )
    }

    fn parse(p: &[(String, String)]) -> Result<AuthorizationRequest, AuthorizationError> {
        AuthorizationRequest::parse(p, &registry())
    }

    fn page(p: &[(String, String)]) -> PageError {
        match parse(p) {
            Err(AuthorizationError::Page(e)) => e,
            other => panic!("expected a page error, got {other:?}"),
        }
    }

    fn redirect(p: &[(String, String)]) -> RedirectError {
        match parse(p) {
            Err(AuthorizationError::Redirect(e)) => e,
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    fn issuer() -> Issuer {
        Issuer::parse("https://halos.local/sso").unwrap()
    }

    #[test]
    fn valid_request() {
        let r = parse(&with(&[
            ("nonce", "n-1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("extra", "ignored"),
            ("extra", "twice"),
            ("display", "popup"),
            ("ui_locales", "se"),
            ("claims_locales", "se"),
            ("acr_values", "1 2"),
            ("login_hint", "alice"),
            ("claims", r#"{"userinfo":{"name":{"essential":true}}}"#),
            ("max_age", "15000"),
        ]))
        .unwrap();
        assert_eq!(r.client.id, "app1");
        assert_eq!(r.redirect_uri, APP1_CB);
        assert_eq!(r.scopes.to_string(), "openid profile");
        assert_eq!(r.state.as_deref(), Some("s"));
        assert_eq!(r.nonce.as_deref(), Some("n-1"));
        assert_eq!(r.code_challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(r.max_age, Some(15000));
        assert_eq!(r.login_hint.as_deref(), Some("alice"));
        assert_eq!(r.prompt, Prompt::default());
    }

    #[test]
    fn scope_order_and_unknown_or_unallowed_scopes() {
        let r = parse(&with(&[("scope", "groups email  openid phone x")])).unwrap();
        // groups is not allowed for app1; phone and x are unknown: dropped.
        assert_eq!(r.scopes.to_string(), "openid email");
        let r = parse(&with(&[("scope", "offline_access openid")])).unwrap();
        assert!(r.scopes.contains(Scope::OfflineAccess));
    }

    #[test]
    fn client_and_redirect_uri_errors_are_pages() {
        assert_eq!(page(&without("client_id")), PageError::MissingClientId);
        assert_eq!(
            page(&with(&[("client_id", "nope")])),
            PageError::UnknownClient("nope".into())
        );
        assert_eq!(
            page(&without("redirect_uri")),
            PageError::MissingRedirectUri
        );
        // Empty value = omitted.
        assert_eq!(
            page(&with(&[("redirect_uri", "")])),
            PageError::MissingRedirectUri
        );
        for bad in [
            "https://app1.halos.local/oauth/callback/",
            "https://app1.halos.local/oauth/callback?x=1",
            "https://APP1.halos.local/oauth/callback",
            "https://app1.halos.local:443/oauth/callback",
            "https://spa.halos.local/cb",
            "https://evil.example/oauth/callback",
        ] {
            assert!(
                matches!(
                    page(&with(&[("redirect_uri", bad)])),
                    PageError::UnregisteredRedirectUri { .. }
                ),
                "{bad}"
            );
        }
        let mut dup = with(&[]);
        dup.push(("redirect_uri".into(), APP1_CB.into()));
        assert_eq!(page(&dup), PageError::RepeatedParameter("redirect_uri"));
        let mut dup = with(&[]);
        dup.push(("client_id".into(), "spa".into()));
        assert_eq!(page(&dup), PageError::RepeatedParameter("client_id"));
        let long = "s".repeat(MAX_STATE_LEN + 1);
        assert_eq!(
            page(&params(&[
                ("client_id", "app1"),
                ("redirect_uri", APP1_CB),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", &long)
            ])),
            PageError::StateTooLong
        );
    }

    #[test]
    fn bad_redirect_uri_wins_over_every_other_error() {
        // B-36: a request object with a bad outer redirect_uri → page, not
        // request_not_supported at the registered URI.
        let p = with(&[
            ("redirect_uri", "https://evil.example/cb"),
            ("request", "eyJhbGciOiJub25lIn0.e30."),
            ("response_type", "token"),
        ]);
        assert!(matches!(
            page(&p),
            PageError::UnregisteredRedirectUri { .. }
        ));
    }

    #[test]
    fn request_objects_are_refused_after_redirect_uri_validation() {
        let e = redirect(&with(&[("request", "eyJhbGciOiJub25lIn0.e30.")]));
        assert_eq!(e.error, OAuthError::RequestNotSupported);
        assert_eq!(e.redirect_uri, APP1_CB);
        assert_eq!(e.state.as_deref(), Some("s"));
        let e = redirect(&with(&[("request_uri", "https://x/r")]));
        assert_eq!(e.error, OAuthError::RequestUriNotSupported);
    }

    #[test]
    fn response_type_errors() {
        assert_eq!(
            redirect(&without("response_type")).error,
            OAuthError::InvalidRequest
        );
        for rt in [
            "token",
            "id_token",
            "code id_token",
            "id_token token",
            "CODE",
        ] {
            assert_eq!(
                redirect(&with(&[("response_type", rt)])).error,
                OAuthError::UnsupportedResponseType,
                "{rt}"
            );
        }
        assert_eq!(
            redirect(&with(&[("response_mode", "form_post")])).error,
            OAuthError::InvalidRequest
        );
        assert!(parse(&with(&[("response_mode", "query")])).is_ok());
    }

    #[test]
    fn repeated_parameters_are_invalid_requests() {
        let mut p = with(&[]);
        p.push(("scope".into(), "openid".into()));
        assert_eq!(redirect(&p).error, OAuthError::InvalidRequest);
        let mut p = with(&[]);
        p.push(("state".into(), "t".into()));
        assert_eq!(page(&p), PageError::RepeatedParameter("state"));
    }

    #[test]
    fn openid_scope_is_required() {
        assert_eq!(redirect(&without("scope")).error, OAuthError::InvalidScope);
        assert_eq!(
            redirect(&with(&[("scope", "profile email")])).error,
            OAuthError::InvalidScope
        );
        assert_eq!(
            redirect(&with(&[("scope", "openid bad\"scope")])).error,
            OAuthError::InvalidScope
        );
    }

    #[test]
    fn pkce_rules() {
        // Public client without PKCE (F2-01, O3).
        let spa = |extra: &[(&'static str, &'static str)]| {
            let mut b = vec![
                ("client_id", "spa"),
                ("redirect_uri", "https://spa.halos.local/cb"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", "s"),
            ];
            b.extend_from_slice(extra);
            params(&b)
        };
        let e = redirect(&spa(&[]));
        assert_eq!(e.error, OAuthError::InvalidRequest);
        assert!(e.description.contains("PKCE"));
        assert!(
            parse(&spa(&[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256")
            ]))
            .is_ok()
        );
        // plain and a missing method (which means plain) are refused (F2-02).
        assert_eq!(
            redirect(&spa(&[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "plain")
            ]))
            .error,
            OAuthError::InvalidRequest
        );
        assert_eq!(
            redirect(&spa(&[("code_challenge", CHALLENGE)])).error,
            OAuthError::InvalidRequest
        );
        assert_eq!(
            redirect(&spa(&[
                ("code_challenge", "short"),
                ("code_challenge_method", "S256")
            ]))
            .error,
            OAuthError::InvalidRequest
        );
        assert_eq!(
            redirect(&spa(&[("code_challenge_method", "S256")])).error,
            OAuthError::InvalidRequest
        );
        // require_pkce on a confidential client.
        let strict = params(&[
            ("client_id", "strict"),
            ("redirect_uri", "https://strict.halos.local/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
        ]);
        let e = redirect(&strict);
        assert_eq!(e.error, OAuthError::InvalidRequest);
        assert_eq!(e.state, None, "no state sent, none returned");
        // Confidential client without PKCE is allowed (PKCE honoured when sent).
        let r = parse(&with(&[])).unwrap();
        assert_eq!(r.code_challenge, None);
    }

    #[test]
    fn prompt_max_age_and_nonce_syntax() {
        let r = parse(&with(&[("prompt", "login consent")])).unwrap();
        assert!(r.prompt.login && r.prompt.consent && !r.prompt.none);
        let r = parse(&with(&[("prompt", "none")])).unwrap();
        assert!(r.prompt.none);
        let r = parse(&with(&[("prompt", "create")])).unwrap();
        assert_eq!(r.prompt, Prompt::default());
        assert_eq!(
            redirect(&with(&[("prompt", "none login")])).error,
            OAuthError::InvalidRequest
        );
        for bad in ["-1", "1.5", "x", "+5"] {
            assert_eq!(
                redirect(&with(&[("max_age", bad)])).error,
                OAuthError::InvalidRequest,
                "{bad}"
            );
        }
        assert_eq!(parse(&with(&[("max_age", "0")])).unwrap().max_age, Some(0));
        let n384 = "n".repeat(384);
        let p = {
            let mut p = with(&[]);
            p.push(("nonce".into(), n384.clone()));
            p
        };
        assert_eq!(parse(&p).unwrap().nonce, Some(n384));
        let mut p = with(&[]);
        p.push(("nonce".into(), "n".repeat(MAX_NONCE_LEN + 1)));
        assert_eq!(redirect(&p).error, OAuthError::InvalidRequest);
    }

    #[test]
    fn locations_keep_query_and_carry_state_and_iss() {
        let iss = issuer();
        let r = parse(&with(&[])).unwrap();
        assert_eq!(
            r.success_location("hac_abc", &iss),
            "https://app1.halos.local/oauth/callback?code=hac_abc&state=s&iss=https%3A%2F%2Fhalos.local%2Fsso"
        );
        let e = r.error(OAuthError::AccessDenied, "The user said \"no\".");
        assert_eq!(
            e.location(&iss),
            "https://app1.halos.local/oauth/callback?error=access_denied&error_description=The+user+said++no+.&state=s&iss=https%3A%2F%2Fhalos.local%2Fsso"
        );
        // Registered URI with a query (CC-06): kept, parameters appended.
        let q = parse(&params(&[
            ("client_id", "q"),
            ("redirect_uri", "https://q.halos.local/cb?tenant=a"),
            ("response_type", "code"),
            ("scope", "openid"),
        ]))
        .unwrap();
        assert_eq!(
            q.success_location("hac_x", &iss),
            "https://q.halos.local/cb?tenant=a&code=hac_x&iss=https%3A%2F%2Fhalos.local%2Fsso"
        );
        // State is echoed byte for byte (encoded, decodes to the same).
        let weird = "a b&c=d/é~%";
        let mut p = without("state");
        p.push(("state".into(), weird.into()));
        let loc = parse(&p).unwrap().success_location("c", &iss);
        let url = url::Url::parse(&loc).unwrap();
        let got: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            got,
            [
                ("code".to_string(), "c".to_string()),
                ("state".to_string(), weird.to_string()),
                ("iss".to_string(), "https://halos.local/sso".to_string())
            ]
        );
        assert_eq!(
            append_query("https://h/cb?", &[("a", "1")]),
            "https://h/cb?a=1"
        );
        assert_eq!(
            append_query("https://h/cb?x=1&", &[("a", "1")]),
            "https://h/cb?x=1&a=1"
        );
    }

    // ---- decide ----

    fn ctx<'a>(session: Option<SessionView<'a>>) -> DecisionContext<'a> {
        DecisionContext {
            now: 10_000,
            flow_started_at: 9_990,
            session,
            ..Default::default()
        }
    }

    fn session(u: &User, auth_time: i64, level: u8) -> SessionView<'_> {
        SessionView {
            user: u,
            sub: "sub-alice",
            auth_time,
            level,
        }
    }

    fn err_of(d: Decision) -> OAuthError {
        match d {
            Decision::Error(e) => e.error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const LOGIN: Decision = Decision::Login {
        reauthenticate: false,
        two_factor: false,
    };
    const REAUTH: Decision = Decision::Login {
        reauthenticate: true,
        two_factor: false,
    };

    #[test]
    fn decide_without_session() {
        let r = parse(&with(&[])).unwrap();
        assert_eq!(r.decide(&ctx(None)), LOGIN);
        let r = parse(&with(&[("prompt", "none")])).unwrap();
        let e = r.decide(&ctx(None));
        assert_eq!(err_of(e.clone()), OAuthError::LoginRequired);
        if let Decision::Error(e) = e {
            assert_eq!(e.state.as_deref(), Some("s"));
        }
        // A disabled user's session or a pending (level 0) session counts as none.
        let mut carol = user("carol", "", "", &[]);
        carol.disabled = true;
        assert_eq!(
            r.decide(&ctx(Some(session(&carol, 9_000, 1)))).clone(),
            Decision::Error(r.error(OAuthError::LoginRequired, "The user must log in."))
        );
        let alice = user("alice", "", "", &[]);
        assert_eq!(
            err_of(r.decide(&ctx(Some(session(&alice, 9_000, 0))))),
            OAuthError::LoginRequired
        );
    }

    #[test]
    fn decide_with_session_issues() {
        let alice = user("alice", "", "", &["users"]);
        let r = parse(&with(&[])).unwrap();
        assert_eq!(r.decide(&ctx(Some(session(&alice, 1, 1)))), Decision::Issue);
        let r = parse(&with(&[("prompt", "none")])).unwrap();
        assert_eq!(r.decide(&ctx(Some(session(&alice, 1, 1)))), Decision::Issue);
    }

    #[test]
    fn decide_prompt_login_and_max_age() {
        let alice = user("alice", "", "", &[]);
        let r = parse(&with(&[("prompt", "login")])).unwrap();
        assert_eq!(r.decide(&ctx(Some(session(&alice, 9_000, 1)))), REAUTH);
        // Logged in again after the request arrived: satisfied, no loop.
        assert_eq!(
            r.decide(&ctx(Some(session(&alice, 9_995, 1)))),
            Decision::Issue
        );

        let r = parse(&with(&[("max_age", "1")])).unwrap();
        assert_eq!(r.decide(&ctx(Some(session(&alice, 9_000, 1)))), REAUTH);
        assert_eq!(
            r.decide(&ctx(Some(session(&alice, 9_999, 1)))),
            Decision::Issue
        );
        let r = parse(&with(&[("max_age", "10000")])).unwrap();
        assert_eq!(
            r.decide(&ctx(Some(session(&alice, 9_000, 1)))),
            Decision::Issue
        );
        let r = parse(&with(&[("max_age", "1"), ("prompt", "none")])).unwrap();
        assert_eq!(
            err_of(r.decide(&ctx(Some(session(&alice, 9_000, 1))))),
            OAuthError::LoginRequired
        );
    }

    #[test]
    fn decide_id_token_hint() {
        let alice = user("alice", "", "", &[]);
        let r = parse(&with(&[("prompt", "none")])).unwrap();
        let mut c = ctx(Some(session(&alice, 1, 1)));
        c.id_token_hint = HintStatus::Valid {
            sub: "sub-alice".into(),
        };
        assert_eq!(r.decide(&c), Decision::Issue);
        c.id_token_hint = HintStatus::Valid {
            sub: "sub-bob".into(),
        };
        assert_eq!(err_of(r.decide(&c)), OAuthError::LoginRequired);
        c.id_token_hint = HintStatus::Invalid;
        assert_eq!(err_of(r.decide(&c)), OAuthError::InvalidRequest);
        let r = parse(&with(&[])).unwrap();
        c.id_token_hint = HintStatus::Valid {
            sub: "sub-bob".into(),
        };
        assert_eq!(r.decide(&c), REAUTH);
        c.id_token_hint = HintStatus::Invalid;
        assert_eq!(err_of(r.decide(&c)), OAuthError::InvalidRequest);
    }

    fn strict_request(extra: &[(&'static str, &'static str)]) -> AuthorizationRequest {
        let mut b = vec![
            ("client_id", "strict"),
            ("redirect_uri", "https://strict.halos.local/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        b.extend_from_slice(extra);
        parse(&params(&b)).unwrap()
    }

    #[test]
    fn decide_groups_two_factor_and_consent() {
        let admin = user("alice", "", "", &["admins"]);
        let bob = user("bob", "", "", &["users"]);
        let r = strict_request(&[]);
        // allowed_groups
        assert_eq!(
            err_of(r.decide(&ctx(Some(session(&bob, 1, 2))))),
            OAuthError::AccessDenied
        );
        // two_factor policy
        assert_eq!(
            r.decide(&ctx(Some(session(&admin, 1, 1)))),
            Decision::Login {
                reauthenticate: false,
                two_factor: true
            }
        );
        assert_eq!(
            r.decide(&ctx(None)),
            Decision::Login {
                reauthenticate: false,
                two_factor: true
            }
        );
        // explicit consent: asked every time, until given for this request.
        assert_eq!(
            r.decide(&ctx(Some(session(&admin, 1, 2)))),
            Decision::Consent
        );
        let mut c = ctx(Some(session(&admin, 1, 2)));
        c.consent_on_record = true;
        assert_eq!(
            r.decide(&c),
            Decision::Consent,
            "explicit ignores remembered consent"
        );
        c.consent_given_now = true;
        assert_eq!(r.decide(&c), Decision::Issue);
        // prompt=none
        let r = strict_request(&[("prompt", "none")]);
        assert_eq!(
            err_of(r.decide(&ctx(Some(session(&admin, 1, 1))))),
            OAuthError::InteractionRequired
        );
        assert_eq!(
            err_of(r.decide(&ctx(Some(session(&admin, 1, 2))))),
            OAuthError::ConsentRequired
        );
    }

    #[test]
    fn decide_pre_configured_and_prompt_consent() {
        let alice = user("alice", "", "", &[]);
        let r = parse(&params(&[
            ("client_id", "remembered"),
            ("redirect_uri", "https://remembered.halos.local/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
        ]))
        .unwrap();
        let mut c = ctx(Some(session(&alice, 1, 1)));
        assert_eq!(r.decide(&c), Decision::Consent);
        c.consent_on_record = true;
        assert_eq!(r.decide(&c), Decision::Issue);
        // prompt=consent asks even for an implicit client.
        let r = parse(&with(&[("prompt", "consent")])).unwrap();
        let mut c = ctx(Some(session(&alice, 1, 1)));
        assert_eq!(r.decide(&c), Decision::Consent);
        c.consent_given_now = true;
        assert_eq!(r.decide(&c), Decision::Issue);
    }
}
