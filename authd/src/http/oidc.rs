//! OpenID Connect endpoints (DESIGN §9): thin handlers over [`crate::oidc`] (the rules)
//! and [`crate::store`] (grants). Only hashes of codes and tokens are stored.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::WebError;
use super::portal::{csrf_token, page_headers};
use super::request::{header as hdr, new_session_id, request_host, request_scheme};
use super::session::{SessionUser, clear_cookie, current_session};
use crate::oidc::authorize::{DecisionContext, HintStatus, SessionView};
use crate::oidc::clients::ConsentMode;
use crate::oidc::token_request::{
    ClientCredentials, CodeGrant, RefreshGrant, Subject, TokenError, authenticate_client,
    token_response,
};
use crate::oidc::{
    AuthMethods, AuthorizationError, AuthorizationRequest, ClientRegistry, Decision, IdTokenParams,
    Issuer, OAuthError, OidcClient, OsRng, SigningKeys, TokenRequest, discovery_document,
    generate_token, id_token_claims, paths, token_hash, userinfo_claims,
};
use crate::site::CookieDomain;
use crate::store::{Consent, Redemption, Rotation, Store, StoredCode, TokenKind, TokenRecord};
use crate::users::User;

/// The provider's state: who we are, our keys, and the (live-swappable) clients.
pub struct Oidc {
    pub issuer: Issuer,
    pub keys: SigningKeys,
    pub registry: ArcSwap<ClientRegistry>,
}

/// Parameters we add to an authorization request on its way through login and consent.
const FLOW_PARAM: &str = "halos_flow";
const CONSENT_PARAM: &str = "halos_consent";
const CSRF_PARAM: &str = "halos_csrf";
/// One-time id of a rendered consent form, bound server-side to the session and request.
const CONSENT_ID_PARAM: &str = "halos_consent_id";
/// How long a consent form can be answered.
const CONSENT_TTL: i64 = 600;

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn json_no_store(status: StatusCode, body: Value) -> Response {
    no_store((status, axum::Json(body)).into_response())
}

fn redirect(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r)
}

fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// Form body for POST, query string otherwise.
fn request_params(method: &Method, query: Option<&str>, body: &[u8]) -> Vec<(String, String)> {
    if method == Method::POST {
        parse_pairs(body)
    } else {
        parse_pairs(query.unwrap_or_default().as_bytes())
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An error page (never a redirect): unknown client, unregistered redirect URI, …
fn error_page(st: &AppState, status: StatusCode, message: &str) -> Response {
    page(st, status, "error", message)
}

fn page(st: &AppState, status: StatusCode, kind: &str, message: &str) -> Response {
    super::portal::message(st, status, kind, message, None)
}

fn oidc(st: &AppState) -> &Oidc {
    &st.oidc
}

/// `/.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub async fn discovery(State(st): State<AppState>) -> Response {
    let mut r = axum::Json(discovery_document(&oidc(&st).issuer)).into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

pub async fn jwks(State(st): State<AppState>) -> Response {
    let mut r = axum::Json(oidc(&st).keys.jwks_json()).into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn auth_methods(amr: &[String]) -> AuthMethods {
    let has = |m: &str| amr.iter().any(|a| a == m);
    AuthMethods {
        password: has("pwd"),
        totp: has("otp"),
        webauthn: has("hwk"),
        webauthn_user_verified: has("user"),
    }
}

fn csrf_ok(headers: &HeaderMap, params: &[(String, String)], cd: &CookieDomain) -> bool {
    let Some(field) = param(params, CSRF_PARAM) else {
        return false;
    };
    csrf_token(headers, cd.secure).is_some_and(|c| bool::from(c.as_bytes().ct_eq(field.as_bytes())))
}

/// `GET|POST /api/oidc/authorization`.
pub async fn authorization(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = request_params(&method, query.as_deref(), &body);
    let o = oidc(&st);
    let registry = o.registry.load();
    let req = match AuthorizationRequest::parse(&params, &registry) {
        Ok(r) => r,
        Err(AuthorizationError::Page(e)) => {
            return error_page(&st, StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(AuthorizationError::Redirect(e)) => return redirect(&e.location(&o.issuer)),
    };
    let trusted = &st.config().server.trusted_proxies;
    let Some(host) = request_host(&peer, &headers, trusted) else {
        return error_page(&st, StatusCode::BAD_REQUEST, "Unknown host.");
    };
    let site = st.site();
    let Some(cd) = site.cookie_domain_for(&host).cloned() else {
        return error_page(
            &st,
            StatusCode::BAD_REQUEST,
            "This address is not configured for sign-in.",
        );
    };
    let now = st.clock.now();
    let flow_started_at = param(&params, FLOW_PARAM)
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(now, |t| t.min(now));
    let session = current_session(&st, &headers, &cd).await;
    let sub = match &session {
        Some(s) => match st.store.subject(&s.user.name).await {
            Ok(sub) => Some(sub),
            Err(e) => return WebError::from(e).into_response(),
        },
        None => None,
    };
    let id_token_hint = match req.id_token_hint.as_deref() {
        None => HintStatus::Absent,
        Some(h) => match o.keys.verify_id_token_hint(h, &o.issuer) {
            Ok(hint) => HintStatus::Valid { sub: hint.sub },
            Err(_) => HintStatus::Invalid,
        },
    };
    let posted_consent = (method == Method::POST && csrf_ok(&headers, &params, &cd))
        .then(|| param(&params, CONSENT_PARAM))
        .flatten();
    if posted_consent.is_some() {
        // Single use and bound to this browser session and this exact request: a replayed
        // or transplanted form gets nothing (catalogue C3).
        match take_consent_form(&st, &params, session.as_ref(), now).await {
            Ok(true) => {}
            Ok(false) => {
                return error_page(
                    &st,
                    StatusCode::FORBIDDEN,
                    "This consent form was already answered or has expired. Start again from the application.",
                );
            }
            Err(e) => return WebError::from(e).into_response(),
        }
    }
    if posted_consent == Some("deny") {
        return redirect(
            &req.error(OAuthError::AccessDenied, "The user declined.")
                .location(&o.issuer),
        );
    }
    let consent_on_record = match (&session, &req.client.consent_mode) {
        (Some(s), ConsentMode::PreConfigured { .. }) => st
            .store
            .consent(&s.user.name, &req.client.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.expires > now && req.scopes.is_subset(c.scopes)),
        _ => false,
    };
    let view = match (&session, &sub) {
        (Some(s), Some(sub)) => Some(SessionView {
            user: &s.user,
            sub,
            auth_time: s.session.auth_time,
            level: s.session.level as u8,
        }),
        _ => None,
    };
    let ctx = DecisionContext {
        now,
        flow_started_at,
        session: view,
        id_token_hint,
        consent_on_record,
        consent_given_now: posted_consent == Some("approve"),
    };
    match req.decide(&ctx) {
        Decision::Error(e) => redirect(&e.location(&o.issuer)),
        Decision::Login { reauthenticate, .. } => {
            // Back to this endpoint after login, on the host the browser used.
            let scheme = request_scheme(&peer, &headers, trusted);
            let mut back = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params.iter().filter(|(k, _)| !k.starts_with("halos_")) {
                back.append_pair(k, v);
            }
            back.append_pair(FLOW_PARAM, &flow_started_at.to_string());
            let return_to = format!(
                "{scheme}://{host}{}{}?{}",
                st.config().path_prefix(),
                paths::AUTHORIZATION,
                back.finish()
            );
            let mut portal = cd.portal.clone();
            {
                let mut q = portal.query_pairs_mut();
                q.append_pair("rd", &return_to).append_pair("rm", "GET");
                if reauthenticate {
                    q.append_pair("prompt", "login");
                }
            }
            redirect(portal.as_str())
        }
        Decision::Consent => {
            let Some(s) = &session else {
                return WebError::Internal("consent without a session".into()).into_response();
            };
            consent_page(&st, &headers, &cd, &req, &params, s, flow_started_at).await
        }
        Decision::Issue => {
            let (Some(s), Some(sub)) = (&session, &sub) else {
                return WebError::Internal("issue without a session".into()).into_response();
            };
            issue_code(&st, &req, s, sub, now, posted_consent == Some("approve")).await
        }
    }
}

async fn issue_code(
    st: &AppState,
    req: &AuthorizationRequest,
    s: &SessionUser,
    sub: &str,
    now: i64,
    consented_now: bool,
) -> Response {
    let o = oidc(st);
    let lifespans = &st.config().identity_providers.oidc.lifespans;
    let code = generate_token(crate::oidc::TokenKind::AuthorizationCode, &mut OsRng);
    let who = Subject {
        username: &s.user.name,
        sub,
        auth_time: s.session.auth_time,
        auth_methods: auth_methods(&s.session.amr),
    };
    let grant = CodeGrant::new(req, who, now, lifespans.authorize_code.as_secs() as i64);
    let family = new_session_id();
    if let Err(e) = st
        .store
        .save_code(token_hash(&code), StoredCode { grant, family })
        .await
    {
        return WebError::from(e).into_response();
    }
    if consented_now && let ConsentMode::PreConfigured { duration } = &req.client.consent_mode {
        let consent = Consent {
            scopes: req.scopes,
            expires: now + duration.as_secs() as i64,
        };
        if let Err(e) = st
            .store
            .save_consent(&s.user.name, &req.client.id, consent)
            .await
        {
            tracing::warn!(error = %e, "cannot remember consent");
        }
    }
    tracing::info!(target: "audit", event = "oidc_authorize", user = %s.user.name, client = %req.client.id);
    redirect(&req.success_location(&code, &o.issuer))
}

/// The authorization request's own parameters (ours, `halos_*`, left out), in order.
fn request_params_only(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(k, _)| !k.starts_with("halos_"))
        .cloned()
        .collect()
}

/// What a consent form is bound to: the session it was shown to and the exact request.
fn consent_binding(session: &SessionUser, params: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in request_params_only(params) {
        for part in [k.as_bytes(), v.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    format!(
        "{}:{}",
        hex::encode(session.session.key),
        hex::encode(h.finalize())
    )
}

fn consent_key(id: &str) -> String {
    format!("consent:{id}")
}

/// Takes the posted consent form's id (single use); `true` when it was issued to this
/// session for this request and has not expired.
async fn take_consent_form(
    st: &AppState,
    params: &[(String, String)],
    session: Option<&SessionUser>,
    now: i64,
) -> Result<bool, crate::store::StoreError> {
    let (Some(id), Some(s)) = (param(params, CONSENT_ID_PARAM), session) else {
        return Ok(false);
    };
    // Only our own 43-character ids reach the store.
    if id.len() != 43
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(false);
    }
    let Some(bound) = st.store.take_ceremony(&consent_key(id), now).await? else {
        return Ok(false);
    };
    Ok(bool::from(
        bound
            .as_bytes()
            .ct_eq(consent_binding(s, params).as_bytes()),
    ))
}

async fn consent_page(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
    req: &AuthorizationRequest,
    params: &[(String, String)],
    session: &SessionUser,
    flow: i64,
) -> Response {
    let (token, fresh) = match csrf_token(headers, cd.secure) {
        Some(t) => (t, false),
        None => (new_session_id(), true),
    };
    let consent_id = new_session_id();
    if let Err(e) = st
        .store
        .put_ceremony(
            &consent_key(&consent_id),
            consent_binding(session, params),
            st.clock.now() + CONSENT_TTL,
        )
        .await
    {
        return WebError::from(e).into_response();
    }
    let mut hidden = request_params_only(params);
    hidden.push((FLOW_PARAM.into(), flow.to_string()));
    hidden.push((CSRF_PARAM.into(), token.clone()));
    hidden.push((CONSENT_ID_PARAM.into(), consent_id));
    let scopes: Vec<&str> = req.scopes.iter().map(|s| s.as_str()).collect();
    let html = st.templates.get_template("consent.html").and_then(|t| {
        t.render(minijinja::context! {
            site_name => "HaLOS", prefix => st.config().path_prefix(), client_name => &req.client.name,
            scopes => scopes, hidden => hidden, action => format!("{}{}", st.config().path_prefix(), paths::AUTHORIZATION),
        })
    });
    let mut r = match html {
        Ok(h) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            h,
        )
            .into_response(),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    page_headers(&mut r);
    if fresh {
        r.headers_mut().append(
            header::SET_COOKIE,
            super::portal::csrf_cookie(st, &token, cd.secure),
        );
    }
    r
}

fn token_error(e: &TokenError, basic_used: bool) -> Response {
    let mut r = json_no_store(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.body(),
    );
    if e.status() == 401 && basic_used {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"halos-authd\""),
        );
    }
    r
}

/// Authenticates the client of a token, introspection or revocation request.
async fn client_auth(
    st: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Arc<OidcClient>, Response> {
    let auth = hdr(headers, "authorization");
    let basic_used = auth.is_some();
    let creds =
        ClientCredentials::from_request(auth, params).map_err(|e| token_error(&e, basic_used))?;
    let registry = oidc(st).registry.load_full();
    let client_id = creds.client_id().to_string();
    let costly = registry
        .get(&client_id)
        .is_some_and(|c| c.secret_check_is_costly());
    let result = if costly {
        // Hashed secrets (argon2/pbkdf2) are checked off the async runtime.
        tokio::task::spawn_blocking(move || authenticate_client(&registry, &creds, &mut Vec::new()))
            .await
            .map_err(|e| WebError::Internal(e.to_string()).into_response())?
    } else {
        authenticate_client(&registry, &creds, &mut Vec::new())
    };
    result.map_err(|e| {
        tracing::info!(target: "audit", event = "oidc_client_auth", result = "failure", client = %client_id);
        token_error(&e, basic_used)
    })
}

fn access_record(grant: RefreshGrant, family: &str, now: i64, lifetime: i64) -> TokenRecord {
    TokenRecord {
        kind: TokenKind::Access,
        family: family.to_string(),
        grant: RefreshGrant {
            expires_at: now + lifetime,
            ..grant
        },
        issued: now,
        used: false,
        revoked: false,
    }
}

/// What a token response is issued from.
struct Issue<'a> {
    client: &'a OidcClient,
    grant: &'a RefreshGrant,
    family: &'a str,
    nonce: Option<&'a str>,
    /// A new refresh token to hand out, and the one it replaces (rotation) if any.
    new_refresh: Option<(String, TokenRecord)>,
    old_refresh: Option<[u8; 32]>,
    user: &'a User,
    now: i64,
}

/// Issues an access token (and ID token, and refresh token when asked) for `grant`.
async fn issue_tokens(st: &AppState, issue: Issue<'_>) -> Result<Response, Response> {
    let Issue {
        client,
        grant,
        family,
        nonce,
        new_refresh,
        old_refresh,
        user,
        now,
    } = issue;
    let o = oidc(st);
    let lifespans = &st.config().identity_providers.oidc.lifespans;
    let access_life = lifespans.access_token.as_secs() as i64;
    let access = generate_token(crate::oidc::TokenKind::AccessToken, &mut OsRng);
    let internal = |e: crate::store::StoreError| WebError::from(e).into_response();
    st.store
        .save_token(
            token_hash(&access),
            access_record(grant.clone(), family, now, access_life),
        )
        .await
        .map_err(internal)?;
    let refresh_token = match (new_refresh, old_refresh) {
        (Some((token, record)), Some(old)) => match st
            .store
            .rotate_refresh(old, token_hash(&token), record, now)
            .await
            .map_err(internal)?
        {
            Rotation::Rotated(_) => Some(token),
            Rotation::Reused => {
                tracing::warn!(target: "audit", event = "refresh_reuse", client = %client.id, user = %grant.username, "refresh token reused: family revoked");
                return Err(token_error(
                    &TokenError::new(
                        OAuthError::InvalidGrant,
                        "The refresh token is no longer valid.",
                    ),
                    false,
                ));
            }
            Rotation::Invalid => {
                return Err(token_error(
                    &TokenError::new(OAuthError::InvalidGrant, "The refresh token is not valid."),
                    false,
                ));
            }
        },
        (Some((token, record)), None) => {
            st.store
                .save_token(token_hash(&token), record)
                .await
                .map_err(internal)?;
            Some(token)
        }
        _ => None,
    };
    let id_token = if grant.scopes.contains(crate::oidc::Scope::Openid) {
        let claims = id_token_claims(&IdTokenParams {
            issuer: &o.issuer,
            sub: &grant.sub,
            client_id: &client.id,
            now,
            lifetime_secs: lifespans.id_token.as_secs() as i64,
            auth_time: grant.auth_time,
            nonce,
            auth_methods: grant.auth_methods.into(),
            access_token: Some(&access),
            user,
            scopes: grant.scopes,
        });
        Some(
            o.keys
                .sign_id_token(client.id_token_alg, &claims)
                .map_err(|e| WebError::Internal(e.to_string()).into_response())?,
        )
    } else {
        None
    };
    let body = token_response(
        &access,
        access_life,
        grant.scopes,
        id_token.as_deref(),
        refresh_token.as_deref(),
    );
    Ok(json_no_store(StatusCode::OK, body))
}

/// `POST /api/oidc/token`.
pub async fn token(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_pairs(&body);
    let client = match client_auth(&st, &headers, &params).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let req = match TokenRequest::parse(&params).and_then(|r| r.check_client(&client).map(|()| r)) {
        Ok(r) => r,
        Err(e) => return token_error(&e, false),
    };
    let now = st.clock.now();
    let lifespans = &st.config().identity_providers.oidc.lifespans;
    let users = st.users.snapshot();
    let result = match req {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            let stored = match st.store.redeem_code(token_hash(&code), now).await {
                Ok(Redemption::Fresh(s)) => s,
                Ok(Redemption::Replayed { family }) => {
                    // A replayed code: whoever used it first may be an attacker. Revoke.
                    let n = st.store.revoke_family(&family).await.unwrap_or(0);
                    tracing::warn!(target: "audit", event = "code_replay", client = %client.id, revoked = n, "authorization code replayed");
                    return token_error(
                        &TokenError::new(OAuthError::InvalidGrant, "The code is not valid."),
                        false,
                    );
                }
                Ok(Redemption::Unknown) => {
                    return token_error(
                        &TokenError::new(OAuthError::InvalidGrant, "The code is not valid."),
                        false,
                    );
                }
                Err(e) => return WebError::from(e).into_response(),
            };
            let user = users.active(&stored.grant.username).cloned();
            if let Err(e) = stored.grant.check_redemption(
                &client,
                redirect_uri.as_deref(),
                code_verifier.as_deref(),
                user.as_deref(),
                now,
            ) {
                return token_error(&e, false);
            }
            let Some(user) = user else {
                return token_error(
                    &TokenError::new(OAuthError::InvalidGrant, "The user is no longer allowed."),
                    false,
                );
            };
            let refresh_life = lifespans.refresh_token.as_secs() as i64;
            let grant = RefreshGrant::from_code(&stored.grant, now, refresh_life);
            let new_refresh = stored.grant.issues_refresh_token(&client).then(|| {
                let token = generate_token(crate::oidc::TokenKind::RefreshToken, &mut OsRng);
                let record = TokenRecord {
                    kind: TokenKind::Refresh,
                    family: stored.family.clone(),
                    grant: grant.clone(),
                    issued: now,
                    used: false,
                    revoked: false,
                };
                (token, record)
            });
            let issue = Issue {
                client: &client,
                grant: &grant,
                family: &stored.family,
                nonce: stored.grant.nonce.as_deref(),
                new_refresh,
                old_refresh: None,
                user: &user,
                now,
            };
            issue_tokens(&st, issue).await
        }
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
        } => {
            let old = token_hash(&refresh_token);
            let record = match st.store.token(old).await {
                Ok(Some(r)) if r.kind == TokenKind::Refresh && !r.revoked => r,
                Ok(_) => {
                    return token_error(
                        &TokenError::new(
                            OAuthError::InvalidGrant,
                            "The refresh token is not valid.",
                        ),
                        false,
                    );
                }
                Err(e) => return WebError::from(e).into_response(),
            };
            let user = users.active(&record.grant.username).cloned();
            let scopes = match record
                .grant
                .check_refresh(&client, scope, user.as_deref(), now)
            {
                Ok(s) => s,
                Err(e) => return token_error(&e, false),
            };
            let Some(user) = user else {
                return token_error(
                    &TokenError::new(OAuthError::InvalidGrant, "The user is no longer allowed."),
                    false,
                );
            };
            let grant = RefreshGrant {
                scopes,
                ..record.grant.clone()
            };
            let token = generate_token(crate::oidc::TokenKind::RefreshToken, &mut OsRng);
            let new_record = TokenRecord {
                kind: TokenKind::Refresh,
                family: record.family.clone(),
                grant: grant.clone(),
                issued: now,
                used: false,
                revoked: false,
            };
            let issue = Issue {
                client: &client,
                grant: &grant,
                family: &record.family,
                nonce: None,
                new_refresh: Some((token, new_record)),
                old_refresh: Some(old),
                user: &user,
                now,
            };
            issue_tokens(&st, issue).await
        }
    };
    match result {
        Ok(r) | Err(r) => r,
    }
}

fn bearer_error(description: &'static str) -> Response {
    let mut r = json_no_store(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_token", "error_description": description}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

/// `GET|POST /api/oidc/userinfo`: plain JSON claims for a Bearer access token.
pub async fn userinfo(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from_header = hdr(&headers, "authorization").and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let from_body = (method == Method::POST)
        .then(|| parse_pairs(&body))
        .and_then(|p| param(&p, "access_token").map(str::to_string));
    let Some(token) = from_header.or(from_body) else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return no_store(r);
    };
    let now = st.clock.now();
    let record = match st.store.token(token_hash(&token)).await {
        Ok(Some(r)) if r.kind == TokenKind::Access && r.active(now) => r,
        Ok(_) => return bearer_error("The access token is not valid."),
        Err(e) => return WebError::from(e).into_response(),
    };
    let users = st.users.snapshot();
    let Some(user) = users.active(&record.grant.username) else {
        return bearer_error("The access token is not valid.");
    };
    json_no_store(
        StatusCode::OK,
        Value::Object(userinfo_claims(
            &record.grant.sub,
            user,
            record.grant.scopes,
        )),
    )
}

/// `POST /api/oidc/introspection` (RFC 7662): for authenticated clients, their own tokens.
pub async fn introspection(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_pairs(&body);
    let client = match client_auth(&st, &headers, &params).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = param(&params, "token") else {
        return json_no_store(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "The token is missing."}),
        );
    };
    let now = st.clock.now();
    let inactive = json_no_store(StatusCode::OK, json!({"active": false}));
    let record = match st.store.token(token_hash(token)).await {
        Ok(Some(r)) if r.active(now) && r.grant.client_id == client.id => r,
        Ok(_) => return inactive,
        Err(e) => return WebError::from(e).into_response(),
    };
    if st.users.snapshot().active(&record.grant.username).is_none() {
        return inactive;
    }
    json_no_store(
        StatusCode::OK,
        json!({
            "active": true,
            "scope": record.grant.scopes.to_string(),
            "client_id": record.grant.client_id,
            "username": record.grant.username,
            "token_type": if record.kind == TokenKind::Access { "Bearer" } else { "refresh_token" },
            "exp": record.grant.expires_at,
            "iat": record.issued,
            "sub": record.grant.sub,
            "aud": record.grant.client_id,
            "iss": oidc(&st).issuer.as_str(),
        }),
    )
}

/// `POST /api/oidc/revocation` (RFC 7009): always 200 for an authenticated client;
/// revoking a refresh token ends its whole family (access tokens included).
pub async fn revocation(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_pairs(&body);
    let client = match client_auth(&st, &headers, &params).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = param(&params, "token") else {
        return json_no_store(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "The token is missing."}),
        );
    };
    if let Ok(Some(r)) = st.store.token(token_hash(token)).await
        && r.grant.client_id == client.id
    {
        let res = if r.kind == TokenKind::Refresh {
            st.store.revoke_family(&r.family).await.map(|_| ())
        } else {
            st.store.revoke_token(token_hash(token)).await.map(|_| ())
        };
        if let Err(e) = res {
            return WebError::from(e).into_response();
        }
        tracing::info!(target: "audit", event = "oidc_revoke", client = %client.id, user = %r.grant.username);
    }
    no_store(StatusCode::OK.into_response())
}

/// `GET|POST /api/oidc/end-session` (RP-Initiated Logout): works without `id_token_hint`;
/// follows `post_logout_redirect_uri` only when registered for the client.
pub async fn end_session(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = request_params(&method, query.as_deref(), &body);
    let o = oidc(&st);
    let hint = match param(&params, "id_token_hint") {
        None => None,
        Some(h) => match o.keys.verify_id_token_hint(h, &o.issuer) {
            Ok(hint) => Some(hint),
            Err(_) => {
                return error_page(
                    &st,
                    StatusCode::BAD_REQUEST,
                    "The id_token_hint is not valid.",
                );
            }
        },
    };
    let client_id = param(&params, "client_id")
        .map(str::to_string)
        .or_else(|| hint.as_ref().and_then(|h| h.aud.first().cloned()));
    if let (Some(h), Some(c)) = (&hint, param(&params, "client_id"))
        && !h.aud.iter().any(|a| a == c)
    {
        return error_page(
            &st,
            StatusCode::BAD_REQUEST,
            "The client_id does not match the id_token_hint.",
        );
    }
    // End the browser's session on this host first: whatever else is wrong with the
    // request, a user who asked to sign out is signed out (Signal K sends no client_id).
    let mut clear = None;
    if let Some(host) = request_host(&peer, &headers, &st.config().server.trusted_proxies)
        && let Some(cd) = st.site().cookie_domain_for(&host).cloned()
    {
        if let Some(s) = current_session(&st, &headers, &cd).await {
            let _ = st.store.delete_session(&s.session.key).await;
            tracing::info!(target: "audit", event = "logout", user = %s.user.name, via = "oidc end-session");
        }
        clear = Some(clear_cookie(&cd));
    }
    let target = match param(&params, "post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let registry = o.registry.load();
            let ok = client_id
                .as_deref()
                .and_then(|c| registry.get(c))
                .is_some_and(|c| c.post_logout_redirect_uri_registered(uri));
            // Unregistered: never followed (open redirect). A client that named itself
            // learns why; the user is signed out either way.
            if !ok {
                tracing::info!(target: "audit", event = "logout_redirect_refused", uri = %uri);
                if client_id.is_some() {
                    let mut r = error_page(
                        &st,
                        StatusCode::BAD_REQUEST,
                        "You have been signed out, but the post_logout_redirect_uri is not registered for this client.",
                    );
                    if let Some(c) = clear {
                        r.headers_mut().append(header::SET_COOKIE, c);
                    }
                    return r;
                }
            }
            ok.then(|| uri.to_string())
        }
    };
    let mut r = match target {
        Some(uri) => {
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = param(&params, "state") {
                pairs.push(("state", s));
            }
            redirect(&crate::oidc::authorize::append_query(&uri, &pairs))
        }
        None => page(&st, StatusCode::OK, "info", "You have been signed out."),
    };
    if let Some(c) = clear {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
