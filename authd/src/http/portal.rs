//! The login portal (server-rendered, works without JavaScript) and its JSON API:
//! `/`, `/login`, `/logout`, `/api/firstfactor`, `/api/state`, `/api/logout`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use url::Url;

use super::AppState;
use super::error::WebError;
use super::request::{client_ip, cookies, header as hdr, request_host};
use super::session::{SessionUser, clear_cookie, current_session, start_session};
use crate::auth::{Attempt, LoginError, first_factor};
use crate::authz::access::{AccessRequest, Subject};
use crate::config::Policy;
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Store};
use crate::users::User;

const CSRF_COOKIE: &str = "halos_csrf";

/// Headers every portal page carries.
pub fn page_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(super) fn cookie_domain(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
) -> Option<CookieDomain> {
    let host = request_host(peer, headers, &st.config().server.trusted_proxies)?;
    st.site().cookie_domain_for(&host).cloned()
}

/// Requests that change state must come from our own pages, not another site.
pub(super) fn same_site_request(st: &AppState, headers: &HeaderMap) -> bool {
    if hdr(headers, "sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    match hdr(headers, "origin") {
        // Our pages send `Referrer-Policy: no-referrer`, and then browsers send
        // `Origin: null` on form posts: the CSRF token and Sec-Fetch-Site decide.
        None | Some("null") => true,
        Some(o) => Url::parse(o)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_some_and(|h| st.site().cookie_domain_for(&h).is_some()),
    }
}

pub(super) fn render(
    st: &AppState,
    name: &str,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    let html = st.templates.get_template(name).and_then(|t| t.render(ctx));
    let mut r = match html {
        Ok(h) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            h,
        )
            .into_response(),
        Err(e) => WebError::Internal(format!("template {name}: {e}")).into_response(),
    };
    page_headers(&mut r);
    r
}

/// The page for a request whose host no cookie domain covers.
pub(super) fn unknown_host(st: &AppState) -> Response {
    message(
        st,
        StatusCode::BAD_REQUEST,
        "error",
        "This address is not configured for sign-in.",
        None,
    )
}

/// A page with one message (`kind`: `error` gets `role="alert"`).
pub fn message(
    st: &AppState,
    status: StatusCode,
    kind: &str,
    msg: &str,
    link: Option<&str>,
) -> Response {
    render(
        st,
        "message.html",
        status,
        minijinja::context! {
            site_name => "HaLOS", prefix => st.config().path_prefix(), title => "Sign in",
            kind => kind, message => msg, link => link, link_text => "Continue",
        },
    )
}

/// Where a successful login at `level` may send the browser: the target when it is safe
/// and the level suffices, else the domain's default, else nowhere (stay on the portal).
fn login_redirect(
    st: &AppState,
    cd: &CookieDomain,
    user: &User,
    level: AuthLevel,
    target: Option<&str>,
    client: std::net::IpAddr,
) -> Option<Url> {
    let site = st.site();
    if let Some(t) = target.filter(|t| !t.is_empty()) {
        let url = site.redirects.check(t)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let need = site.access.check(
            &AccessRequest {
                host: &host,
                path: &path,
                method: "GET",
                client_ip: client,
            },
            Some(&Subject {
                username: &user.name,
                groups: &user.groups,
            }),
        );
        return match need.policy {
            Policy::Bypass | Policy::OneFactor => Some(url),
            Policy::TwoFactor if level >= AuthLevel::TwoFactor => Some(url),
            _ => None,
        };
    }
    cd.default_redirect.clone()
}

#[derive(Debug, Deserialize, Default)]
pub struct PortalQuery {
    rd: Option<String>,
    rm: Option<String>,
    /// `login`: ask for credentials even with a session (OIDC `prompt=login`, `max_age`).
    prompt: Option<String>,
}

pub(super) fn csrf_token(headers: &HeaderMap) -> Option<String> {
    cookies(headers, CSRF_COOKIE)
        .find(|v| v.len() == 43)
        .map(str::to_string)
}

/// The CSRF double-submit cookie, scoped to the portal's path.
pub fn csrf_cookie(st: &AppState, token: &str) -> HeaderValue {
    let cfg = st.config();
    let path = if cfg.path_prefix().is_empty() {
        "/"
    } else {
        cfg.path_prefix()
    };
    HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the sign-in page shows.
#[derive(Clone, Copy)]
struct LoginView<'a> {
    rd: &'a str,
    rm: &'a str,
    username: &'a str,
    error: Option<&'a str>,
    logged_in: Option<&'a str>,
}

fn login_page(
    st: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    v: LoginView<'_>,
) -> Response {
    let LoginView {
        rd,
        rm,
        username,
        error,
        logged_in,
    } = v;
    let (token, fresh) = match csrf_token(headers) {
        Some(t) => (t, false),
        None => (super::request::new_session_id(), true),
    };
    let mut r = render(
        st,
        "login.html",
        status,
        minijinja::context! {
            site_name => "HaLOS", prefix => st.config().path_prefix(), csrf => token,
            rd => rd, rm => rm, username => username, error => error,
            username_logged_in => logged_in,
        },
    );
    if fresh {
        r.headers_mut()
            .append(header::SET_COOKIE, csrf_cookie(st, &token));
    }
    r
}

/// `GET /`: the sign-in page, or straight on to `rd` for a session that already suffices.
pub async fn portal(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<PortalQuery>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let rd = q.rd.as_deref().unwrap_or("");
    let rm = q.rm.as_deref().unwrap_or("GET");
    let force_login = q.prompt.as_deref() == Some("login");
    if !force_login
        && let Some(SessionUser { session, user }) = current_session(&st, &headers, &cd).await
    {
        let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
        if !rd.is_empty()
            && let Some(url) = login_redirect(&st, &cd, &user, session.level, Some(rd), ip)
        {
            return see_other(url.as_str(), StatusCode::FOUND);
        }
        return login_page(
            &st,
            &headers,
            StatusCode::OK,
            LoginView {
                rd,
                rm,
                username: "",
                error: None,
                logged_in: Some(&user.name),
            },
        );
    }
    login_page(
        &st,
        &headers,
        StatusCode::OK,
        LoginView {
            rd,
            rm,
            username: "",
            error: None,
            logged_in: None,
        },
    )
}

pub(super) fn see_other(location: &str, status: StatusCode) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    page_headers(&mut r);
    r
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    remember_me: Option<String>,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    rm: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`: the no-JavaScript form.
pub async fn login_form(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let csrf_ok =
        csrf_token(&headers).is_some_and(|t| bool::from(t.as_bytes().ct_eq(f.csrf.as_bytes())));
    if !csrf_ok || !same_site_request(&st, &headers) {
        return login_page(
            &st,
            &headers,
            StatusCode::FORBIDDEN,
            LoginView {
                rd: &f.rd,
                rm: &f.rm,
                username: &f.username,
                error: Some("Your session form expired. Please try again."),
                logged_in: None,
            },
        );
    }
    let remember = f.remember_me.is_some();
    match do_login(
        &st,
        &peer,
        &headers,
        &cd,
        &f.username,
        &f.password,
        remember,
    )
    .await
    {
        Ok((user, cookie)) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let next = login_redirect(&st, &cd, &user, AuthLevel::OneFactor, Some(&f.rd), ip)
                .map(|u| u.to_string())
                .unwrap_or_else(|| cd.portal.to_string());
            let mut r = see_other(&next, StatusCode::SEE_OTHER);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(LoginError::Busy) => {
            let mut r = login_page(
                &st,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                LoginView {
                    rd: &f.rd,
                    rm: &f.rm,
                    username: &f.username,
                    error: Some("Too many sign-ins at once. Please try again in a moment."),
                    logged_in: None,
                },
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
        Err(LoginError::Failed) => login_page(
            &st,
            &headers,
            StatusCode::UNAUTHORIZED,
            LoginView {
                rd: &f.rd,
                rm: &f.rm,
                username: &f.username,
                error: Some("Incorrect username or password."),
                logged_in: None,
            },
        ),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

async fn do_login(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
    cd: &CookieDomain,
    username: &str,
    password: &str,
    remember: bool,
) -> Result<(std::sync::Arc<User>, HeaderValue), LoginError> {
    if username.len() > 256 || password.len() > 1024 {
        return Err(LoginError::Failed);
    }
    let ip = client_ip(peer, headers, &st.config().server.trusted_proxies);
    let attempt = Attempt {
        username,
        password,
        client_ip: ip,
        now: st.clock.now(),
    };
    let result = first_factor(&st.authenticator(), attempt).await;
    match &result {
        Ok(_) => st.metrics.login(true),
        Err(LoginError::Busy) => st.metrics.login_busy(),
        Err(_) => st.metrics.login(false),
    }
    let user = result?;
    let previous = current_session(st, headers, cd).await.map(|s| s.session);
    let cookie = start_session(
        st,
        cd,
        &user,
        AuthLevel::OneFactor,
        remember,
        vec!["pwd".into()],
        previous.as_deref(),
    )
    .await?;
    Ok((user, cookie))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstFactorBody {
    username: String,
    password: String,
    #[serde(default)]
    keep_me_logged_in: bool,
    #[serde(default, rename = "targetURL")]
    target_url: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    request_method: Option<String>,
}

fn ko_auth() -> Response {
    WebError::AuthenticationFailed.into_response()
}

/// `POST /api/firstfactor` (Authelia's JSON API).
pub async fn api_firstfactor(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<FirstFactorBody>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("host not covered by a cookie domain".into()).into_response();
    };
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    match do_login(
        &st,
        &peer,
        &headers,
        &cd,
        &b.username,
        &b.password,
        b.keep_me_logged_in,
    )
    .await
    {
        Ok((user, cookie)) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let body = match login_redirect(
                &st,
                &cd,
                &user,
                AuthLevel::OneFactor,
                b.target_url.as_deref(),
                ip,
            ) {
                Some(u) => json!({"status": "OK", "data": {"redirect": u.as_str()}}),
                None => json!({"status": "OK"}),
            };
            let mut r = Json(body).into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(LoginError::Failed) => ko_auth(),
        Err(LoginError::Busy) => WebError::Busy.into_response(),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

/// `GET /api/state`.
pub async fn api_state(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let session = match cookie_domain(&st, &peer, &headers) {
        Some(cd) => current_session(&st, &headers, &cd).await,
        None => None,
    };
    let (username, level) = match &session {
        Some(s) => (Some(s.user.name.as_str()), s.session.level as u8),
        None => (None, 0),
    };
    let mut r = Json(
        json!({"status": "OK", "data": {"username": username, "authentication_level": level}}),
    )
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn end_session(st: &AppState, headers: &HeaderMap, cd: &CookieDomain) {
    // Every cookie of ours in the request, valid or not, is ended server-side.
    for value in cookies(headers, &cd.cookie_name) {
        if let Some(key) = super::request::session_key(value)
            && let Ok(Some(s)) = st.store.session(&key).await
        {
            tracing::info!(target: "audit", event = "logout", user = %s.username);
            let _ = st.store.delete_session(&key).await;
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct LogoutBody {
    #[serde(default, rename = "targetURL")]
    target_url: Option<String>,
}

/// `POST /api/logout`.
pub async fn api_logout(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<LogoutBody>>,
) -> Response {
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("host not covered by a cookie domain".into()).into_response();
    };
    end_session(&st, &headers, &cd).await;
    let safe = body
        .and_then(|Json(b)| b.target_url)
        .is_some_and(|t| st.site().redirects.check(&t).is_some());
    let mut r = Json(json!({"status": "OK", "data": {"safeTargetURL": safe}})).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&cd));
    r
}

/// `GET /logout?rd=`: ends the session and goes to `rd` when safe, else the portal.
pub async fn logout(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<PortalQuery>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    end_session(&st, &headers, &cd).await;
    let next =
        q.rd.as_deref()
            .and_then(|t| st.site().redirects.check(t))
            .map(|u| u.to_string())
            .unwrap_or_else(|| cd.portal.to_string());
    let mut r = see_other(&next, StatusCode::FOUND);
    r.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&cd));
    r
}

pub async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("../../static/portal.css"),
    )
        .into_response()
}

/// The template environment, built once. `.html` names turn HTML auto-escaping on.
pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, src) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("message.html", include_str!("../../templates/message.html")),
        ("consent.html", include_str!("../../templates/consent.html")),
        (
            "login_code.html",
            include_str!("../../templates/login_code.html"),
        ),
    ] {
        // Embedded at build time; a syntax error is caught by the unit test below.
        if let Err(e) = env.add_template(name, src) {
            tracing::error!(template = name, error = %e, "broken built-in template");
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_escape() {
        let env = templates();
        let html = env
            .get_template("login.html")
            .unwrap()
            .render(minijinja::context! {
                site_name => "HaLOS", prefix => "/sso", csrf => "t", rd => "\"><script>x</script>", rm => "GET",
                username => "", error => None::<String>, username_logged_in => None::<String>,
            })
            .unwrap();
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
        assert!(html.contains("name=\"remember_me\"") && html.contains("id=\"sign-in\""));
        assert!(!html.contains("<script>x"), "rd must be escaped");
        let msg = env
            .get_template("message.html")
            .unwrap()
            .render(minijinja::context! { site_name => "HaLOS", prefix => "/sso", title => "t", kind => "error", message => "<b>", link => None::<String>, link_text => "" })
            .unwrap();
        assert!(msg.contains("role=\"alert\"") && msg.contains("&lt;b&gt;"));
    }
}
