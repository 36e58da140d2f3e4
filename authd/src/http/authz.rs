//! Forward auth (DESIGN §6): Traefik/Caddy `forward-auth`, nginx `auth-request`, and
//! Authelia's legacy `/api/verify`. The hot path: memory lookups only, no disk, no
//! password hashing (unless the client sends Basic credentials).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use url::Url;

use super::AppState;
use super::request::{client_ip, is_browser_request, is_trusted};
use super::session::{SessionUser, try_current_session};
use crate::auth::{Attempt, LoginError, first_factor};
use crate::authz::access::{AccessRequest, Subject};
use crate::authz::redirect::SafeRedirect;
use crate::authz::target::{PlainTarget, plain_forwarded, plain_url};
use crate::config::Policy;
use crate::metrics::Decision;
use crate::site::{CookieDomain, IdentityHeaderNames, Site};
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

/// The headers forward auth reads, found in one pass over the request's headers (cheaper
/// than a map lookup per name: a proxy sends a dozen headers, and this runs for every
/// sub-request of every page). Each holds the first value, when it is visible ASCII, as
/// `HeaderMap::get` + `to_str` would give it.
#[derive(Debug, Default)]
pub struct ForwardHeaders<'a> {
    pub original_url: Option<&'a str>,
    pub original_method: Option<&'a str>,
    pub forwarded_method: Option<&'a str>,
    pub forwarded_proto: Option<&'a str>,
    pub forwarded_host: Option<&'a str>,
    pub forwarded_uri: Option<&'a str>,
    /// One of the six above arrived more than once.
    pub repeated: bool,
    pub authorization: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub authelia_url: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub requested_with: Option<&'a str>,
}

impl<'a> ForwardHeaders<'a> {
    pub fn read(headers: &'a HeaderMap) -> ForwardHeaders<'a> {
        // Bits 0..6: the forwarded set, which must not repeat.
        const FORWARDED: u16 = 0b11_1111;
        let mut f = ForwardHeaders::default();
        let mut seen = 0u16;
        for (name, value) in headers {
            let (bit, slot): (u16, &mut Option<&'a str>) = match name.as_str() {
                "x-original-url" => (1 << 0, &mut f.original_url),
                "x-original-method" => (1 << 1, &mut f.original_method),
                "x-forwarded-method" => (1 << 2, &mut f.forwarded_method),
                "x-forwarded-proto" => (1 << 3, &mut f.forwarded_proto),
                "x-forwarded-host" => (1 << 4, &mut f.forwarded_host),
                "x-forwarded-uri" => (1 << 5, &mut f.forwarded_uri),
                "authorization" => (1 << 6, &mut f.authorization),
                "x-api-key" => (1 << 7, &mut f.api_key),
                "x-authelia-url" => (1 << 8, &mut f.authelia_url),
                "accept" => (1 << 9, &mut f.accept),
                "x-requested-with" => (1 << 10, &mut f.requested_with),
                _ => continue,
            };
            if seen & bit != 0 {
                // A proxy sends each forwarded header once; several values mean a client's
                // copy got through next to the proxy's, and either could be the one the app sees.
                f.repeated |= bit & FORWARDED != 0;
                continue;
            }
            seen |= bit;
            *slot = value.to_str().ok();
        }
        f
    }
}

/// The request a proxy asks about, as read by the URL parser (the full path).
#[derive(Debug)]
pub struct Target {
    pub url: Url,
    pub method: String,
}

/// The target's method: the proxy's header, or for the legacy endpoint the request's own.
fn target_method<'a>(
    flavor: Flavor,
    use_original: bool,
    f: &ForwardHeaders<'a>,
    request_method: &'a Method,
) -> Result<&'a str, &'static str> {
    let method = if use_original {
        match (flavor, f.original_method, f.forwarded_method) {
            (_, Some(m), _) => m,
            (Flavor::Legacy, None, Some(m)) => m,
            (Flavor::Legacy, None, None) => request_method.as_str(),
            _ => return Err("missing X-Original-Method"),
        }
    } else {
        match (flavor, f.forwarded_method) {
            (_, Some(m)) => m,
            (Flavor::Legacy, None) => request_method.as_str(),
            _ => return Err("missing X-Forwarded-Method"),
        }
    };
    if valid_method(method) {
        Ok(method)
    } else {
        Err("invalid method")
    }
}

fn uses_original(flavor: Flavor, f: &ForwardHeaders<'_>) -> bool {
    match flavor {
        Flavor::AuthRequest => true,
        Flavor::ForwardAuth => false,
        Flavor::Legacy => f.original_url.is_some(),
    }
}

/// Reads the target from the forwarded headers with the URL parser (pure: no state; fuzzed
/// in `fuzz/`). Forward auth takes [`resolve_target`], which answers plain targets without it.
pub fn parse_target(
    flavor: Flavor,
    headers: &HeaderMap,
    request_method: &Method,
) -> Result<Target, &'static str> {
    parse_target_from(flavor, &ForwardHeaders::read(headers), request_method)
}

fn parse_target_from(
    flavor: Flavor,
    f: &ForwardHeaders<'_>,
    request_method: &Method,
) -> Result<Target, &'static str> {
    if f.repeated {
        return Err("repeated forwarded header");
    }
    let use_original = uses_original(flavor, f);
    let method = target_method(flavor, use_original, f, request_method)?.to_string();
    let raw = if use_original {
        f.original_url.ok_or("missing X-Original-URL")?.to_string()
    } else {
        let proto = f.forwarded_proto.unwrap_or("https");
        let host = f.forwarded_host.ok_or("missing X-Forwarded-Host")?;
        let uri = f.forwarded_uri.unwrap_or("/");
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
        format!("{proto}://{host}{uri}")
    };
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

/// The plain form of the target (see [`crate::authz::target`]), when it has one; `None`
/// says nothing about validity. Public for the fuzz target that compares both paths.
pub fn plain_target<'a>(flavor: Flavor, f: &ForwardHeaders<'a>) -> Option<PlainTarget<'a>> {
    if f.repeated {
        return None;
    }
    if uses_original(flavor, f) {
        f.original_url.and_then(plain_url)
    } else {
        plain_forwarded(
            f.forwarded_proto.unwrap_or("https"),
            f.forwarded_host?,
            f.forwarded_uri.unwrap_or("/"),
        )
    }
}

/// A validated target: what the access rules see, and how to send the user back to it.
pub struct ResolvedTarget<'a> {
    pub method: &'a str,
    /// Lower-case host, without port.
    pub host: Cow<'a, str>,
    /// Path and query as the URL parser gives them.
    pub path: Cow<'a, str>,
    /// Position of the host's cookie domain in the site's list ([`Site::cookie_domain_at`]).
    pub cookie_domain: Option<usize>,
    /// The URL to return to after login: set by the full path; a plain target builds it
    /// only when a redirect needs it ([`ResolvedTarget::url`]).
    url: Option<Url>,
    plain: Option<PlainTarget<'a>>,
}

impl ResolvedTarget<'_> {
    /// The normalised target URL (the portal's `rd`), as the redirect validator gives it.
    pub fn url(&self, redirects: &SafeRedirect) -> Option<Cow<'_, Url>> {
        if let Some(u) = &self.url {
            return Some(Cow::Borrowed(u));
        }
        let p = self.plain?;
        let scheme = if p.secure { "https" } else { "http" };
        let raw = match p.port {
            Some(port) => format!("{scheme}://{}:{port}{}", p.host, p.path),
            None => format!("{scheme}://{}{}", p.host, p.path),
        };
        redirects.check(&raw).map(Cow::Owned)
    }
}

/// The target of a forward-auth request, validated: an allowed scheme and a host covered by
/// a cookie domain. Plain targets are read without the URL parser; everything else takes
/// [`parse_target`] and [`SafeRedirect::check`], which decide identically on plain ones.
pub fn resolve_target<'a>(
    flavor: Flavor,
    f: &ForwardHeaders<'a>,
    request_method: &'a Method,
    redirects: &SafeRedirect,
) -> Result<ResolvedTarget<'a>, &'static str> {
    const NOT_COVERED: &str = "target scheme or host not covered by a cookie domain";
    if let Some(p) = plain_target(flavor, f) {
        let method = target_method(flavor, uses_original(flavor, f), f, request_method)?;
        let (cookie_domain, covered) = redirects.plain_host_domains(p.host, p.secure);
        if !covered {
            return Err(NOT_COVERED);
        }
        return Ok(ResolvedTarget {
            method,
            host: Cow::Borrowed(p.host),
            path: Cow::Borrowed(p.path),
            cookie_domain,
            url: None,
            plain: Some(p),
        });
    }
    let target = parse_target_from(flavor, f, request_method)?;
    // The target must be a URL we could send a user back to: allowed scheme, covered host.
    let url = redirects.check(target.url.as_str()).ok_or(NOT_COVERED)?;
    let method = target_method(flavor, uses_original(flavor, f), f, request_method)?;
    let host = Cow::Owned(url.host_str().unwrap_or_default().to_string());
    let path = Cow::Owned(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    });
    Ok(ResolvedTarget {
        method,
        cookie_domain: redirects.domain_index_for(&host),
        host,
        path,
        url: Some(url),
        plain: None,
    })
}

/// The portal URL for redirects: the cookie domain's, or a safe override.
fn portal_url<'s>(
    flavor: Flavor,
    q: &AuthzQuery,
    f: &ForwardHeaders<'_>,
    cd: &'s CookieDomain,
    site: &Site,
) -> Result<Option<Cow<'s, Url>>, &'static str> {
    let over = match flavor {
        Flavor::Legacy => q.rd.as_deref().or(f.authelia_url),
        _ => q.authelia_url.as_deref(),
    };
    match over {
        Some(u) => match site.redirects.check(u) {
            Some(url) => Ok(Some(Cow::Owned(url))),
            None => Err("unsafe portal URL override"),
        },
        None if flavor == Flavor::Legacy => Ok(None),
        None => Ok(Some(Cow::Borrowed(&cd.portal))),
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
/// any copy the client sent. No body: proxies discard it, and nginx's `auth_request` does
/// not read one, so a body would cost it the upstream keep-alive connection.
fn allowed(user: Option<&User>, names: &IdentityHeaderNames) -> Response {
    let mut r = StatusCode::OK.into_response();
    if let Some(u) = user {
        let h = r.headers_mut();
        h.reserve(4);
        let id = &u.identity;
        for (name, value) in [
            (&names.user, &id.user),
            (&names.groups, &id.groups),
            (&names.name, &id.name),
            (&names.email, &id.email),
        ] {
            // A value that cannot be a header (a control character in a display name) is
            // left out rather than failing the request.
            if let Some(v) = value {
                h.insert(name.clone(), v.clone());
            }
        }
    }
    r
}

fn login_required(
    flavor: Flavor,
    f: &ForwardHeaders<'_>,
    portal: Option<&Url>,
    target: &Url,
    method: &str,
) -> Response {
    let Some(portal) = portal else {
        return plain(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let location = redirect_location(portal, target, method);
    let status = if flavor == Flavor::AuthRequest || !is_browser_request(f.accept, f.requested_with)
    {
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

fn store_unavailable() -> Response {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: session store unreachable",
    )
}

/// An API token in `X-Api-Key` or `Authorization: Bearer`. Only values in our own
/// format (`halos_…`) are ours: apps behind the proxy may use these headers for their
/// own keys, and those requests are judged by their session as before.
fn presented_api_token<'a>(f: &ForwardHeaders<'a>) -> Option<&'a str> {
    let ours = |v: &str| v.starts_with(crate::api_token::PREFIX);
    let bearer = f.authorization.and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .filter(|v| ours(v))
        .or_else(|| f.api_key.map(str::trim).filter(|v| ours(v)))
}

/// Forward auth with an API token: valid, in scope and the owner enabled → the access
/// rules decide with the owner as subject at one factor; anything else → 401.
async fn api_token_decision(
    st: &AppState,
    site: &Site,
    presented: &str,
    target: &ResolvedTarget<'_>,
    client_ip: IpAddr,
) -> Response {
    let now = st.clock.now();
    let host = target.host.as_ref();
    let path_only = target.path.split('?').next().unwrap_or_default();
    let token =
        match crate::api_token::authenticate(&st.store, presented, host, path_only, now).await {
            Ok(t) => t,
            Err(crate::api_token::Refusal::StoreUnavailable) => return store_unavailable(),
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
    let req = AccessRequest {
        host,
        path: &target.path,
        method: target.method,
        client_ip,
    };
    let need = site.access.check(
        &req,
        Some(&Subject {
            username: &user.name,
            groups: &user.groups,
        }),
    );
    match need.policy {
        Policy::Bypass | Policy::OneFactor => allowed(Some(user), site.identity_headers(need.rule)),
        // A token is one factor, like Basic credentials.
        Policy::TwoFactor | Policy::Deny => {
            tracing::info!(user = %user.name, host = %host, method = %target.method, "forward auth: forbidden (API token)");
            plain(StatusCode::FORBIDDEN, "403 Forbidden")
        }
    }
}

/// `Authorization: Basic` credentials, verified like a portal login (regulated).
async fn basic_user(
    st: &AppState,
    f: &ForwardHeaders<'_>,
    client_ip: impl FnOnce() -> IpAddr,
) -> Option<Result<Arc<User>, Response>> {
    let value = f.authorization?;
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
    let attempt = Attempt {
        username: user,
        password: pass,
        client_ip: client_ip(),
        now: st.clock.now(),
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
        Err(LoginError::Store(_)) => Some(Err(store_unavailable())),
        Err(_) => {
            st.metrics.login(false);
            Some(Err(basic_challenge()))
        }
    }
}

/// One forward-auth decision, with its metrics; for nginx without a body.
pub async fn handle(
    flavor: Flavor,
    st: &AppState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    q: &AuthzQuery,
) -> Response {
    let start = std::time::Instant::now();
    let resp = without_body_for_nginx(flavor, decide(flavor, st, peer, method, headers, q).await);
    let decision = match resp.status() {
        StatusCode::OK => Decision::Allowed,
        StatusCode::FOUND | StatusCode::SEE_OTHER => Decision::Redirect,
        StatusCode::FORBIDDEN => Decision::Forbidden,
        StatusCode::BAD_REQUEST => Decision::BadRequest,
        _ => Decision::Unauthorized,
    };
    st.metrics.decision(decision, start.elapsed());
    resp
}

async fn decide(
    flavor: Flavor,
    st: &AppState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    q: &AuthzQuery,
) -> Response {
    let config = st.config();
    let trusted = &config.server.trusted_proxies;
    if !is_trusted(&peer, trusted) {
        // Forwarded headers from anyone else are not believed; without them there is nothing to check.
        return bad_request("request not from a trusted proxy");
    }
    let f = ForwardHeaders::read(headers);
    let site = st.site();
    let target = match resolve_target(flavor, &f, method, &site.redirects) {
        Ok(t) => t,
        Err(why) => return bad_request(why),
    };
    let Some(cd) = target.cookie_domain.and_then(|i| site.cookie_domain_at(i)) else {
        return bad_request("no cookie domain for the target host");
    };
    let portal = match portal_url(flavor, q, &f, cd, &site) {
        Ok(p) => p,
        Err(why) => return bad_request(why),
    };
    let real_ip = || client_ip(&peer, headers, trusted);

    if let Some(presented) = presented_api_token(&f) {
        return api_token_decision(st, &site, presented, &target, real_ip()).await;
    }

    let mut basic: Option<Arc<User>> = None;
    if let Some(res) = basic_user(st, &f, real_ip).await {
        match res {
            Ok(u) => basic = Some(u),
            Err(resp) => return resp,
        }
    }
    let session: Option<SessionUser> = if basic.is_none() {
        match try_current_session(st, headers, cd).await {
            Ok(s) => s,
            // Fail closed: without the store nobody is let through (the store logs why).
            Err(_) => return store_unavailable(),
        }
    } else {
        None
    };
    let (user, level): (Option<&User>, AuthLevel) = match (&basic, &session) {
        (Some(u), _) => (Some(u.as_ref()), AuthLevel::OneFactor),
        (None, Some(s)) => (Some(s.user.as_ref()), s.session.level),
        (None, None) => (None, AuthLevel::None),
    };

    // Walking X-Forwarded-For is only worth it when a rule looks at the address.
    let ip = if site.access.uses_networks() {
        real_ip()
    } else {
        peer.ip().to_canonical()
    };
    let req = AccessRequest {
        host: &target.host,
        path: &target.path,
        method: target.method,
        client_ip: ip,
    };
    let subject = user.map(|u| Subject {
        username: &u.name,
        groups: &u.groups,
    });
    let need = site.access.check(&req, subject.as_ref());
    let login = || match target.url(&site.redirects) {
        Some(url) => login_required(flavor, &f, portal.as_deref(), &url, target.method),
        // A plain target always passes the validator; should it not, nothing is followed.
        None => bad_request("target scheme or host not covered by a cookie domain"),
    };
    let resp = match need.policy {
        Policy::Bypass => allowed(user, site.identity_headers(need.rule)),
        Policy::Deny if need.identity_required && user.is_none() => login(),
        Policy::Deny => plain(StatusCode::FORBIDDEN, "403 Forbidden"),
        Policy::OneFactor | Policy::TwoFactor => {
            let required = if need.policy == Policy::TwoFactor {
                AuthLevel::TwoFactor
            } else {
                AuthLevel::OneFactor
            };
            if user.is_some() && level >= required {
                allowed(user, site.identity_headers(need.rule))
            } else if basic.is_some() {
                // Basic credentials are one factor only (as in Authelia).
                plain(StatusCode::FORBIDDEN, "403 Forbidden")
            } else {
                login()
            }
        }
    };
    if resp.status() == StatusCode::FORBIDDEN {
        tracing::info!(user = user.map(|u| u.name.as_str()).unwrap_or(""), host = %target.host, method = %target.method, "forward auth: forbidden");
    }
    resp
}

/// Which forward-auth endpoint a request is for, if any: the serving loop answers these
/// itself, without the router (see [`super::serve`]).
#[derive(Debug, Clone)]
pub struct HotRoutes {
    forward_auth: String,
    auth_request: String,
    verify: String,
}

impl HotRoutes {
    pub fn new(prefix: &str) -> HotRoutes {
        HotRoutes {
            forward_auth: format!("{prefix}{}", super::paths::FORWARD_AUTH),
            auth_request: format!("{prefix}{}", super::paths::AUTH_REQUEST),
            verify: format!("{prefix}{}", super::paths::VERIFY),
        }
    }

    /// The flavour for `method` and `path`, exactly where the router would route them to
    /// one of the handlers below (GET/HEAD for the two `authz` endpoints, any method for
    /// `/api/verify`); anything else is the router's.
    pub fn flavor(&self, method: &Method, path: &str) -> Option<Flavor> {
        let get_or_head = *method == Method::GET || *method == Method::HEAD;
        if get_or_head && path == self.forward_auth {
            Some(Flavor::ForwardAuth)
        } else if get_or_head && path == self.auth_request {
            Some(Flavor::AuthRequest)
        } else if path == self.verify {
            Some(Flavor::Legacy)
        } else {
            None
        }
    }
}

/// Answers a forward-auth request from its parts (the serving loop's fast path and the
/// router's handlers alike). The request's body is never read.
pub async fn respond(
    flavor: Flavor,
    st: &AppState,
    peer: SocketAddr,
    parts: &axum::http::request::Parts,
) -> Response {
    // The body is never read (these routes sit outside the body-limit layer, to keep the
    // hot path lean), but an oversized one is still refused as elsewhere.
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > st.config().server.max_body_bytes as u64)
    {
        return without_body_for_nginx(flavor, StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let q = match parts.uri.query() {
        None => AuthzQuery::default(),
        Some(_) => match Query::<AuthzQuery>::try_from_uri(&parts.uri) {
            Ok(Query(q)) => q,
            Err(e) => return without_body_for_nginx(flavor, e.into_response()),
        },
    };
    handle(flavor, st, peer, &parts.method, &parts.headers, &q).await
}

/// nginx never shows an `auth_request` answer's body (`error_page` does), and does not read
/// it: a body would make it close the upstream connection after every check.
fn without_body_for_nginx(flavor: Flavor, mut resp: Response) -> Response {
    if flavor == Flavor::AuthRequest && resp.status() != StatusCode::OK {
        *resp.body_mut() = axum::body::Body::empty();
        resp.headers_mut().remove(header::CONTENT_TYPE);
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
            respond($flavor, &st, peer, &parts).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::redirect::RedirectDomain;

    fn redirects() -> SafeRedirect {
        SafeRedirect::new(vec![
            RedirectDomain {
                domain: "halos.local".into(),
                allow_http: false,
            },
            RedirectDomain {
                domain: "lan.test".into(),
                allow_http: true,
            },
        ])
    }

    const HOSTS: &[&str] = &[
        "app.halos.local",
        "halos.local",
        "a-b.c9.halos.local",
        "app.halos.local:8443",
        "app.halos.local:0",
        "app.halos.local:65535",
        "app.halos.local:65536",
        "app.lan.test",
        "evil.example",
        "halos.local.evil.example",
        "evilhalos.local",
        "App.Halos.Local",
        "app.halos.local.",
        "app..halos.local",
        "192.168.1.5",
        "app.halos.123",
        "xn--hlos-7ve.local",
        "ab--cd.halos.local",
        "-app.halos.local",
        "[::1]",
        "app.halos.local:",
    ];
    const URIS: &[&str] = &[
        "/",
        "/dashboard?x=1",
        "/a/b.txt",
        "/.well-known/openid-configuration",
        "/a//b",
        "/a/../b",
        "/a/./b",
        "/%2e%2e/admin",
        "/a%2fb",
        "/caf%C3%A9",
        "/a?q=%20x&y=/z?",
        "/a?q=%0a",
        "/a?it's",
        "/a?",
        "/a;b=c,d:e@f!$&()*+~",
        "/a b",
        "/a\"b",
        "/a|b",
        "/a{b}",
        "//evil.example/",
        "x",
        "",
    ];

    /// The plain reading and the URL parser agree wherever the plain one answers (the same
    /// property the `forward_headers` fuzz target checks on arbitrary input).
    #[test]
    fn plain_targets_read_as_the_url_parser_reads_them() {
        let r = redirects();
        let mut plain = 0;
        for proto in ["https", "http", "HTTPS"] {
            for host in HOSTS {
                for uri in URIS {
                    let mut forwarded = HeaderMap::new();
                    forwarded.insert("x-forwarded-method", HeaderValue::from_static("GET"));
                    forwarded.insert("x-forwarded-proto", HeaderValue::from_str(proto).unwrap());
                    forwarded.insert("x-forwarded-host", HeaderValue::from_str(host).unwrap());
                    forwarded.insert("x-forwarded-uri", HeaderValue::from_str(uri).unwrap());
                    let mut original = HeaderMap::new();
                    original.insert("x-original-method", HeaderValue::from_static("GET"));
                    original.insert(
                        "x-original-url",
                        HeaderValue::from_str(&format!("{proto}://{host}{uri}")).unwrap(),
                    );
                    for (flavor, headers) in [
                        (Flavor::ForwardAuth, &forwarded),
                        (Flavor::AuthRequest, &original),
                    ] {
                        let f = ForwardHeaders::read(headers);
                        let fast = resolve_target(flavor, &f, &Method::GET, &r);
                        let full = parse_target(flavor, headers, &Method::GET)
                            .ok()
                            .and_then(|t| r.check(t.url.as_str()));
                        let what = format!("{flavor:?} {proto}://{host}{uri}");
                        match (&fast, &full) {
                            (Ok(t), Some(u)) => {
                                plain += usize::from(t.plain.is_some());
                                assert_eq!(t.host, u.host_str().unwrap(), "{what}");
                                let path = match u.query() {
                                    Some(q) => format!("{}?{q}", u.path()),
                                    None => u.path().to_string(),
                                };
                                assert_eq!(t.path, path, "{what}");
                                assert_eq!(t.url(&r).as_deref(), Some(u), "{what}");
                                assert_eq!(
                                    t.cookie_domain,
                                    r.domain_index_for(u.host_str().unwrap()),
                                    "{what}"
                                );
                            }
                            (Err(_), None) => {}
                            _ => panic!("{what}: plain {:?} full {full:?}", fast.is_ok()),
                        }
                    }
                }
            }
        }
        assert!(plain > 100, "the plain reading answered only {plain} times");
    }

    #[test]
    fn forward_headers_are_read_in_one_pass_as_the_map_gives_them() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-host",
            HeaderValue::from_static("a.halos.local"),
        );
        h.append("accept", HeaderValue::from_static("text/html"));
        h.append("accept", HeaderValue::from_static("application/json"));
        h.append(
            "authorization",
            HeaderValue::from_bytes(b"Basic \xff").unwrap(),
        );
        h.append("authorization", HeaderValue::from_static("Bearer halos_x"));
        let f = ForwardHeaders::read(&h);
        assert_eq!(f.forwarded_host, Some("a.halos.local"));
        assert_eq!(
            f.accept,
            Some("text/html"),
            "the first value, like HeaderMap::get"
        );
        assert_eq!(
            f.authorization, None,
            "the first value is not text: none, like get+to_str"
        );
        assert!(!f.repeated);
        h.append("x-forwarded-host", HeaderValue::from_static("evil.example"));
        assert!(ForwardHeaders::read(&h).repeated);
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        assert!(
            !ForwardHeaders::read(&h).repeated,
            "only forwarded headers must not repeat"
        );
    }
}
