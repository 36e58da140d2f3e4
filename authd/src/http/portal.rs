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
use super::session::{
    NewSession, SessionUser, clear_cookie, current_session, pending_session, start_session,
};
use crate::auth::{Attempt, LoginError, first_factor};
use crate::authz::access::{AccessRequest, Subject};
use crate::config::Policy;
use crate::second_factor::is_default_password;
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Store};
use crate::users::User;

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

/// The policy `url` needs from `user`: its access rule, or for our own OIDC authorization
/// endpoint, the client's `authorization_policy` (so a portal login knows when an OIDC
/// client still needs a second factor).
pub(super) fn target_policy(
    st: &AppState,
    user: &User,
    url: &Url,
    client: std::net::IpAddr,
) -> Policy {
    if url.path().ends_with(crate::oidc::paths::AUTHORIZATION)
        && let Some((_, id)) = url.query_pairs().find(|(k, _)| k == "client_id")
        && st
            .oidc
            .registry
            .load()
            .get(&id)
            .is_some_and(|c| c.authorization_policy == Policy::TwoFactor)
    {
        return Policy::TwoFactor;
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    st.site()
        .access
        .check(
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
        )
        .policy
}

/// Whether a session at `level` still needs a second factor for the (safe) `target`.
pub(super) fn needs_second_factor(
    st: &AppState,
    user: &User,
    level: AuthLevel,
    target: Option<&str>,
    client: std::net::IpAddr,
) -> bool {
    level < AuthLevel::TwoFactor
        && target
            .filter(|t| !t.is_empty())
            .and_then(|t| st.site().redirects.check(t))
            .is_some_and(|url| target_policy(st, user, &url, client) == Policy::TwoFactor)
}

/// Where a successful login at `level` may send the browser: the target when it is safe
/// and the level suffices, else the domain's default, else nowhere (stay on the portal).
pub(super) fn login_redirect(
    st: &AppState,
    cd: &CookieDomain,
    user: &User,
    level: AuthLevel,
    target: Option<&str>,
    client: std::net::IpAddr,
) -> Option<Url> {
    if let Some(t) = target.filter(|t| !t.is_empty()) {
        let url = st.site().redirects.check(t)?;
        return match target_policy(st, user, &url, client) {
            Policy::Bypass | Policy::OneFactor => Some(url),
            Policy::TwoFactor if level >= AuthLevel::TwoFactor => Some(url),
            _ => None,
        };
    }
    cd.default_redirect.clone()
}

/// The portal page a step of the login continues on (`path` relative to the portal),
/// carrying the target along.
pub(super) fn portal_step(cd: &CookieDomain, path: &str, rd: &str) -> String {
    let mut u = cd.portal.join(path).unwrap_or_else(|_| cd.portal.clone());
    if !rd.is_empty() {
        u.query_pairs_mut().append_pair("rd", rd);
    }
    u.to_string()
}

#[derive(Debug, Deserialize, Default)]
pub struct PortalQuery {
    pub rd: Option<String>,
    pub rm: Option<String>,
    /// `login`: ask for credentials even with a session (OIDC `prompt=login`, `max_age`).
    pub prompt: Option<String>,
}

/// The CSRF double-submit cookie's name. On https portals it has the `__Host-` prefix:
/// browsers then accept it only host-only, `Secure` and `Path=/`, so a sibling subdomain
/// cannot plant ("toss") a token of its choosing. Plain-http portals (the LAN opt-in)
/// cannot use the prefix.
pub fn csrf_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-halos_csrf"
    } else {
        "halos_csrf"
    }
}

/// The CSRF token the browser holds, if any.
pub fn csrf_token(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookies(headers, csrf_cookie_name(secure))
        .find(|v| v.len() == 43)
        .map(str::to_string)
}

/// The CSRF cookie (`secure`: the portal is https).
pub fn csrf_cookie(st: &AppState, token: &str, secure: bool) -> HeaderValue {
    let name = csrf_cookie_name(secure);
    let cookie = if secure {
        format!("{name}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")
    } else {
        let cfg = st.config();
        let path = if cfg.path_prefix().is_empty() {
            "/"
        } else {
            cfg.path_prefix()
        };
        format!("{name}={token}; Path={path}; HttpOnly; SameSite=Strict")
    };
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
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
    cd: &CookieDomain,
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
    let (token, fresh) = match csrf_token(headers, cd.secure) {
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
            passkey_login => !st.config().webauthn.disable && st.config().webauthn.enable_passkey_login,
        },
    );
    if fresh {
        r.headers_mut()
            .append(header::SET_COOKIE, csrf_cookie(st, &token, cd.secure));
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
        && let Some(p) = pending_session(&st, &headers, &cd).await
        && p.session.must_change_password
    {
        return see_other(&portal_step(&cd, "password/change", rd), StatusCode::FOUND);
    }
    if !force_login
        && let Some(SessionUser { session, user }) = current_session(&st, &headers, &cd).await
    {
        let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
        if needs_second_factor(&st, &user, session.level, Some(rd), ip) {
            return super::second_factor::second_factor_page(
                &st,
                &headers,
                cd.secure,
                StatusCode::OK,
                &user,
                rd,
                None,
            )
            .await;
        }
        if !rd.is_empty()
            && let Some(url) = login_redirect(&st, &cd, &user, session.level, Some(rd), ip)
        {
            return see_other(url.as_str(), StatusCode::FOUND);
        }
        return login_page(
            &st,
            &headers,
            &cd,
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
        &cd,
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
    let csrf_ok = csrf_token(&headers, cd.secure)
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(f.csrf.as_bytes())));
    if !csrf_ok || !same_site_request(&st, &headers) {
        return login_page(
            &st,
            &headers,
            &cd,
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
        Ok((user, cookie, must_change)) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let next = if must_change {
                portal_step(&cd, "password/change", &f.rd)
            } else if needs_second_factor(&st, &user, AuthLevel::OneFactor, Some(&f.rd), ip) {
                portal_step(&cd, "", &f.rd)
            } else {
                login_redirect(&st, &cd, &user, AuthLevel::OneFactor, Some(&f.rd), ip)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| cd.portal.to_string())
            };
            let mut r = see_other(&next, StatusCode::SEE_OTHER);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(LoginError::Busy) => {
            let mut r = login_page(
                &st,
                &headers,
                &cd,
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
            &cd,
            StatusCode::UNAUTHORIZED,
            LoginView {
                rd: &f.rd,
                rm: &f.rm,
                username: &f.username,
                error: Some("Incorrect username or password."),
                logged_in: None,
            },
        ),
        Err(LoginError::Store(_)) => WebError::Unavailable.into_response(),
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
) -> Result<(std::sync::Arc<User>, HeaderValue, bool), LoginError> {
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
    // The plaintext that just verified is compared with the documented default: no
    // extra hash, and the session cannot be used until the password is changed.
    let must_change = is_default_password(password);
    if must_change {
        tracing::info!(target: "audit", event = "default_password", user = %user.name, "login with the default password: change required");
    }
    let previous = pending_session(st, headers, cd).await.map(|s| s.session);
    let login = NewSession {
        level: AuthLevel::OneFactor,
        remember_me: remember,
        amr: vec!["pwd".into()],
        must_change_password: must_change,
    };
    let cookie = start_session(st, cd, &user, login, previous.as_deref()).await?;
    Ok((user, cookie, must_change))
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

pub(super) fn ko_auth() -> Response {
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
        Ok((user, cookie, must_change)) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let target = b.target_url.as_deref();
            let body = if must_change {
                let page = portal_step(&cd, "password/change", target.unwrap_or(""));
                json!({"status": "OK", "data": {"redirect": page}})
            } else if needs_second_factor(&st, &user, AuthLevel::OneFactor, target, ip) {
                // As Authelia: no redirect yet, the second factor comes first.
                json!({"status": "OK"})
            } else {
                match login_redirect(&st, &cd, &user, AuthLevel::OneFactor, target, ip) {
                    Some(u) => json!({"status": "OK", "data": {"redirect": u.as_str()}}),
                    None => json!({"status": "OK"}),
                }
            };
            let mut r = Json(body).into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(LoginError::Failed) => ko_auth(),
        Err(LoginError::Busy) => WebError::Busy.into_response(),
        Err(LoginError::Store(_)) => WebError::Unavailable.into_response(),
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

/// Ends every session the request's cookies name; `false` if the store could not be reached
/// (the session then lives on server-side until it expires).
async fn end_session(st: &AppState, headers: &HeaderMap, cd: &CookieDomain) -> bool {
    let mut ended = true;
    // Every cookie of ours in the request, valid or not, is ended server-side.
    for value in cookies(headers, &cd.cookie_name) {
        st.session_keys.forget(value);
        let Some(key) = super::request::session_key(value) else {
            continue;
        };
        match st.store.session(&key).await {
            Ok(Some(s)) => {
                tracing::info!(target: "audit", event = "logout", user = %s.username);
                ended &= st.store.delete_session(&key).await.is_ok();
            }
            Ok(None) => {}
            Err(_) => ended = false,
        }
    }
    ended
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
    if !end_session(&st, &headers, &cd).await {
        let mut r = WebError::Unavailable.into_response();
        r.headers_mut()
            .append(header::SET_COOKIE, clear_cookie(&cd));
        return r;
    }
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
    let _ = end_session(&st, &headers, &cd).await;
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
        (
            "second_factor.html",
            include_str!("../../templates/second_factor.html"),
        ),
        (
            "change_password.html",
            include_str!("../../templates/change_password.html"),
        ),
        (
            "settings.html",
            include_str!("../../templates/settings.html"),
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
                passkey_login => true,
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
        let base = minijinja::context! { site_name => "HaLOS", prefix => "/sso", csrf => "t" };
        let tf = env
            .get_template("second_factor.html")
            .unwrap()
            .render(minijinja::context! { username => "ann", rd => "", error => None::<String>, has_totp => true, has_passkeys => true, ..base.clone() })
            .unwrap();
        assert!(
            tf.contains("name=\"code\"")
                && tf.contains("id=\"verify\"")
                && tf.contains("id=\"passkey-sign-in\"")
        );
        let cp = env
            .get_template("change_password.html")
            .unwrap()
            .render(minijinja::context! { username => "ann", rd => "", error => Some("weak"), ..base.clone() })
            .unwrap();
        assert!(cp.contains("role=\"alert\"") && cp.contains("name=\"new_password\""));
        let enrol = minijinja::context! { uri => "otpauth://totp/x", qr => "data:image/svg+xml;base64,AA", secret => "ABC" };
        let st = env
            .get_template("settings.html")
            .unwrap()
            .render(minijinja::context! {
                username => "ann", recent => true, notice => None::<String>, error => None::<String>,
                enrol => Some(enrol), totp => None::<String>, totp_enabled => true, webauthn_enabled => true,
                passkeys => vec![minijinja::context! { id => "c1", name => "Phone" }], ..base
            })
            .unwrap();
        assert!(
            st.contains("id=\"passkey-register\"")
                && st.contains("id=\"totp-uri\"")
                && st.contains("Phone")
        );
    }
}
