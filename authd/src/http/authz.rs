//! Forward auth (DESIGN §6): Traefik/Caddy `forward-auth`, nginx `auth-request`, and
//! Authelia's legacy `/api/verify`. The hot path: memory lookups only, no disk, no
//! password hashing (unless the client sends Basic credentials).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use url::Url;

use super::AppState;
use super::request::{client_ip, header as hdr, is_browser, is_trusted};
use super::session::{SessionUser, try_current_session};
use crate::auth::{Attempt, LoginError, first_factor};
use crate::authz::access::{AccessRequest, Subject};
use crate::config::{IdentityHeaders, Policy};
use crate::metrics::Decision;
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Store};
use crate::users::User;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Traefik / Caddy: `X-Forwarded-*`.
    ForwardAuth,
    /// nginx: `X-Original-URL` / `X-Original-Method`; always 401 when not authorised.
    AuthRequest,
    /// Authelia's `/api/verify`: either header set, portal from `?rd=`.
    Legacy,
}

#[derive(Debug, Deserialize, Default)]
pub struct AuthzQuery {
    authelia_url: Option<String>,
    rd: Option<String>,
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

fn bad_request(why: &str) -> Response {
    tracing::debug!(reason = why, "forward auth: bad request");
    plain(StatusCode::BAD_REQUEST, "400 Bad Request")
}

fn valid_method(m: &str) -> bool {
    !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase())
}

/// The request a proxy asks about: its URL and method.
#[derive(Debug)]
pub struct Target {
    pub url: Url,
    pub method: String,
}

/// Reads the target from the forwarded headers (pure: no state; fuzzed in `fuzz/`).
pub fn parse_target(
    flavor: Flavor,
    headers: &HeaderMap,
    request_method: &Method,
) -> Result<Target, &'static str> {
    // A proxy sends each of these once; several (or comma-joined) values mean a client's
    // copy got through next to the proxy's, and either could be the one the app sees.
    for name in [
        "x-original-url",
        "x-original-method",
        "x-forwarded-method",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-uri",
    ] {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return Err("repeated forwarded header");
        }
    }
    let original = hdr(headers, "x-original-url");
    let use_original = match flavor {
        Flavor::AuthRequest => true,
        Flavor::ForwardAuth => false,
        Flavor::Legacy => original.is_some(),
    };
    let (raw, method) = if use_original {
        let url = original.ok_or("missing X-Original-URL")?;
        let method = match (
            flavor,
            hdr(headers, "x-original-method"),
            hdr(headers, "x-forwarded-method"),
        ) {
            (_, Some(m), _) => m.to_string(),
            (Flavor::Legacy, None, Some(m)) => m.to_string(),
            (Flavor::Legacy, None, None) => request_method.as_str().to_string(),
            _ => return Err("missing X-Original-Method"),
        };
        (url.to_string(), method)
    } else {
        let method = match (flavor, hdr(headers, "x-forwarded-method")) {
            (_, Some(m)) => m.to_string(),
            (Flavor::Legacy, None) => request_method.as_str().to_string(),
            _ => return Err("missing X-Forwarded-Method"),
        };
        let proto = hdr(headers, "x-forwarded-proto").unwrap_or("https");
        let host = hdr(headers, "x-forwarded-host").ok_or("missing X-Forwarded-Host")?;
        let uri = hdr(headers, "x-forwarded-uri").unwrap_or("/");
        if !(proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("http")) {
            return Err("X-Forwarded-Proto must be http or https");
        }
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err("X-Forwarded-Host must be one host[:port]");
        }
        if !uri.starts_with('/') || uri.starts_with("//") {
            return Err("X-Forwarded-Uri must be an origin-form path");
        }
        (format!("{proto}://{host}{uri}"), method)
    };
    if !valid_method(&method) {
        return Err("invalid method");
    }
    // No control characters, and none of the characters a URL parser reinterprets
    // (`\` is `/` for http, `#` would hide the rest of the path from the rule match).
    if raw.len() > 8192
        || raw
            .bytes()
            .any(|b| b.is_ascii_control() || b"\\# ".contains(&b))
    {
        return Err("invalid target URL");
    }
    let url = Url::parse(&raw).map_err(|_| "target URL does not parse")?;
    if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
        return Err("target URL must be http(s) with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("target URL has userinfo");
    }
    Ok(Target { url, method })
}

/// The portal URL for redirects: the cookie domain's, or a safe override.
fn portal_url(
    flavor: Flavor,
    q: &AuthzQuery,
    headers: &HeaderMap,
    cd: &CookieDomain,
    st: &AppState,
) -> Result<Option<Url>, &'static str> {
    let site = st.site();
    let over = match flavor {
        Flavor::Legacy => q.rd.as_deref().or_else(|| hdr(headers, "x-authelia-url")),
        _ => q.authelia_url.as_deref(),
    };
    match over {
        Some(u) => match site.redirects.check(u) {
            Some(url) => Ok(Some(url)),
            None => Err("unsafe portal URL override"),
        },
        None if flavor == Flavor::Legacy => Ok(None),
        None => Ok(Some(cd.portal.clone())),
    }
}

fn redirect_location(portal: &Url, target: &Url, method: &str) -> String {
    let mut loc = portal.clone();
    if !loc.path().ends_with('/') {
        let p = format!("{}/", loc.path());
        loc.set_path(&p);
    }
    loc.query_pairs_mut()
        .clear()
        .append_pair("rd", target.as_str())
        .append_pair("rm", method);
    loc.to_string()
}

/// 200 with the identity headers; all four are always present so a proxy overwrites
/// any copy the client sent.
fn allowed(user: Option<&User>, names: &IdentityHeaders) -> Response {
    let mut r = plain(StatusCode::OK, "200 OK");
    if let Some(u) = user {
        let h = r.headers_mut();
        let mut set = |name: &str, value: &str| {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                h.insert(n, v);
            }
        };
        set(&names.user, &u.name);
        set(&names.groups, &u.groups.join(","));
        set(&names.name, &u.displayname);
        set(&names.email, &u.email);
    }
    r
}

fn login_required(
    flavor: Flavor,
    headers: &HeaderMap,
    portal: Option<Url>,
    target: &Url,
    method: &str,
) -> Response {
    let Some(portal) = portal else {
        return plain(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let location = redirect_location(&portal, target, method);
    let status = if flavor == Flavor::AuthRequest || !is_browser(headers) {
        StatusCode::UNAUTHORIZED
    } else if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        StatusCode::FOUND
    } else {
        StatusCode::SEE_OTHER
    };
    let body = format!("<a href=\"{}\">{}</a>", html_escape(&location), status);
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn basic_challenge() -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Authorization Required\""),
    );
    r
}

/// 401 for a refused API token (RFC 6750); never a redirect: the client is a script.
fn bearer_challenge() -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"halos-auth\", error=\"invalid_token\""),
    );
    r
}

/// An API token in `X-Api-Key` or `Authorization: Bearer`. Only values in our own
/// format (`halos_…`) are ours: apps behind the proxy may use these headers for their
/// own keys, and those requests are judged by their session as before.
fn presented_api_token(headers: &HeaderMap) -> Option<&str> {
    let ours = |v: &str| v.starts_with(crate::api_token::PREFIX);
    let bearer = hdr(headers, "authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .filter(|v| ours(v))
        .or_else(|| hdr(headers, "x-api-key").map(str::trim).filter(|v| ours(v)))
}

/// Forward auth with an API token: valid, in scope and the owner enabled → the access
/// rules decide with the owner as subject at one factor; anything else → 401.
async fn api_token_decision(
    st: &AppState,
    presented: &str,
    host: &str,
    target_url: &Url,
    method: &str,
    peer: &SocketAddr,
    headers: &HeaderMap,
) -> Response {
    let now = st.clock.now();
    let token =
        match crate::api_token::authenticate(&st.store, presented, host, target_url.path(), now)
            .await
        {
            Ok(t) => t,
            Err(crate::api_token::Refusal::StoreUnavailable) => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: session store unreachable",
                );
            }
            Err(why) => {
                tracing::info!(reason = ?why, host = %host, "forward auth: API token refused");
                return bearer_challenge();
            }
        };
    let users = st.users.snapshot();
    let Some(user) = users.active(&token.username) else {
        tracing::info!(id = %token.id, "forward auth: API token of a disabled or deleted user");
        return bearer_challenge();
    };
    let _ = st.store.touch_api_token(&token.id, now).await;
    let path = match target_url.query() {
        Some(q) => format!("{}?{q}", target_url.path()),
        None => target_url.path().to_string(),
    };
    let req = AccessRequest {
        host,
        path: &path,
        method,
        client_ip: client_ip(peer, headers, &st.config().server.trusted_proxies),
    };
    let site = st.site();
    let need = site.access.check(
        &req,
        Some(&Subject {
            username: &user.name,
            groups: &user.groups,
        }),
    );
    match need.policy {
        Policy::Bypass | Policy::OneFactor => allowed(Some(user), need.headers),
        // A token is one factor, like Basic credentials.
        Policy::TwoFactor | Policy::Deny => {
            tracing::info!(user = %user.name, host = %host, method = %method, "forward auth: forbidden (API token)");
            plain(StatusCode::FORBIDDEN, "403 Forbidden")
        }
    }
}

/// `Authorization: Basic` credentials, verified like a portal login (regulated).
async fn basic_user(
    st: &AppState,
    headers: &HeaderMap,
    peer: &SocketAddr,
) -> Option<Result<Arc<User>, Response>> {
    let value = hdr(headers, "authorization")?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok();
    let creds = decoded.and_then(|d| String::from_utf8(d).ok());
    let Some((user, pass)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Some(Err(basic_challenge()));
    };
    let ip = client_ip(peer, headers, &st.config().server.trusted_proxies);
    let now = st.clock.now();
    let attempt = Attempt {
        username: user,
        password: pass,
        client_ip: ip,
        now,
    };
    let result = first_factor(&st.authenticator(), attempt).await;
    match result {
        // The documented default password must be changed in the portal first.
        Ok(_) if crate::second_factor::is_default_password(pass) => {
            tracing::info!(target: "audit", event = "login", result = "refused", user = %user, factor = "basic", reason = "default password must be changed");
            Some(Err(basic_challenge()))
        }
        Ok(u) => {
            st.metrics.login(true);
            Some(Ok(u))
        }
        Err(LoginError::Busy) => {
            st.metrics.login_busy();
            Some(Err(super::error::WebError::Busy.into_response()))
        }
        Err(LoginError::Store(_)) => Some(Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: session store unreachable",
        ))),
        Err(_) => {
            st.metrics.login(false);
            Some(Err(basic_challenge()))
        }
    }
}

pub async fn handle(
    flavor: Flavor,
    st: AppState,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    q: AuthzQuery,
) -> Response {
    let start = std::time::Instant::now();
    let metrics = std::sync::Arc::clone(&st.metrics);
    let resp = decide(flavor, st, peer, method, headers, q).await;
    let decision = match resp.status() {
        StatusCode::OK => Decision::Allowed,
        StatusCode::FOUND | StatusCode::SEE_OTHER => Decision::Redirect,
        StatusCode::FORBIDDEN => Decision::Forbidden,
        StatusCode::BAD_REQUEST => Decision::BadRequest,
        _ => Decision::Unauthorized,
    };
    metrics.decision(decision, start.elapsed());
    resp
}

async fn decide(
    flavor: Flavor,
    st: AppState,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    q: AuthzQuery,
) -> Response {
    let trusted = &st.config().server.trusted_proxies;
    if !is_trusted(&peer, trusted) {
        // Forwarded headers from anyone else are not believed; without them there is nothing to check.
        return bad_request("request not from a trusted proxy");
    }
    let target = match parse_target(flavor, &headers, &method) {
        Ok(t) => t,
        Err(why) => return bad_request(why),
    };
    let site = st.site();
    // The target must be a URL we could send a user back to: allowed scheme, covered host.
    let Some(target_url) = site.redirects.check(target.url.as_str()) else {
        return bad_request("target scheme or host not covered by a cookie domain");
    };
    let host = target_url.host_str().unwrap_or_default().to_string();
    let Some(cd) = site.cookie_domain_for(&host) else {
        return bad_request("no cookie domain for the target host");
    };
    let portal = match portal_url(flavor, &q, &headers, cd, &st) {
        Ok(p) => p,
        Err(why) => return bad_request(why),
    };

    if let Some(presented) = presented_api_token(&headers) {
        return api_token_decision(
            &st,
            presented,
            &host,
            &target_url,
            &target.method,
            &peer,
            &headers,
        )
        .await;
    }

    let mut basic: Option<Arc<User>> = None;
    if let Some(res) = basic_user(&st, &headers, &peer).await {
        match res {
            Ok(u) => basic = Some(u),
            Err(resp) => return resp,
        }
    }
    let session: Option<SessionUser> = if basic.is_none() {
        match try_current_session(&st, &headers, cd).await {
            Ok(s) => s,
            // Fail closed: without the store nobody is let through (the store logs why).
            Err(_) => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: session store unreachable",
                );
            }
        }
    } else {
        None
    };
    let (user, level): (Option<&User>, AuthLevel) = match (&basic, &session) {
        (Some(u), _) => (Some(u.as_ref()), AuthLevel::OneFactor),
        (None, Some(s)) => (Some(s.user.as_ref()), s.session.level),
        (None, None) => (None, AuthLevel::None),
    };

    let path = match target_url.query() {
        Some(q) => format!("{}?{q}", target_url.path()),
        None => target_url.path().to_string(),
    };
    let ip = client_ip(&peer, &headers, trusted);
    let req = AccessRequest {
        host: &host,
        path: &path,
        method: &target.method,
        client_ip: ip,
    };
    let subject = user.map(|u| Subject {
        username: &u.name,
        groups: &u.groups,
    });
    let need = site.access.check(&req, subject.as_ref());
    let login = || {
        login_required(
            flavor,
            &headers,
            portal.clone(),
            &target_url,
            &target.method,
        )
    };
    let resp = match need.policy {
        Policy::Bypass => allowed(user, need.headers),
        Policy::Deny if need.identity_required && user.is_none() => login(),
        Policy::Deny => plain(StatusCode::FORBIDDEN, "403 Forbidden"),
        Policy::OneFactor | Policy::TwoFactor => {
            let required = if need.policy == Policy::TwoFactor {
                AuthLevel::TwoFactor
            } else {
                AuthLevel::OneFactor
            };
            if user.is_some() && level >= required {
                allowed(user, need.headers)
            } else if basic.is_some() {
                // Basic credentials are one factor only (as in Authelia).
                plain(StatusCode::FORBIDDEN, "403 Forbidden")
            } else {
                login()
            }
        }
    };
    if resp.status() == StatusCode::FORBIDDEN {
        tracing::info!(user = user.map(|u| u.name.as_str()).unwrap_or(""), host = %host, method = %target.method, "forward auth: forbidden");
    }
    resp
}

/// One axum handler per flavour; they differ only in which headers they read. The request
/// is taken whole so its headers move into the handler instead of being cloned (the
/// `HeaderMap` extractor copies every header: measurable on the hot path).
macro_rules! authz_handler {
    ($(#[$doc:meta])* $name:ident, $flavor:expr) => {
        $(#[$doc])*
        pub async fn $name(
            State(st): State<AppState>,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
            request: Request,
        ) -> Response {
            let (parts, _body) = request.into_parts();
            // The body is never read here (these routes sit outside the body-limit layer,
            // to keep the hot path lean), but an oversized one is still refused as elsewhere.
            if parts
                .headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > st.config().server.max_body_bytes as u64)
            {
                return StatusCode::PAYLOAD_TOO_LARGE.into_response();
            }
            let q = match parts.uri.query() {
                None => AuthzQuery::default(),
                Some(_) => match Query::<AuthzQuery>::try_from_uri(&parts.uri) {
                    Ok(Query(q)) => q,
                    Err(e) => return e.into_response(),
                },
            };
            handle($flavor, st, peer, parts.method, parts.headers, q).await
        }
    };
}

authz_handler!(
    /// `GET|HEAD /api/authz/forward-auth` (Traefik, Caddy).
    forward_auth,
    Flavor::ForwardAuth
);
authz_handler!(
    /// `GET|HEAD /api/authz/auth-request` (nginx).
    auth_request,
    Flavor::AuthRequest
);
authz_handler!(
    /// `ANY /api/verify` (Authelia's legacy endpoint).
    legacy_verify,
    Flavor::Legacy
);
