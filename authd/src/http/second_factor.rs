//! Login steps after the password: the TOTP form and `/api/secondfactor/totp`, and the
//! forced change of the documented default password (`/password/change`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::WebError;
use super::portal::{
    PortalQuery, cookie_domain, csrf_cookie, csrf_token, ko_auth, login_redirect,
    needs_second_factor, portal_step, render, same_site_request, see_other, unknown_host,
};
use super::request::client_ip;
use super::session::{SessionUser, add_amr, current_session, pending_session, reissue_session};
use crate::auth::LoginError;
use crate::second_factor::{WeakPassword, check_new_password, verify_totp};
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Store};
use crate::users::User;
use crate::users::edit::{UserChange, UserPatch, UsersFile};

/// The page's CSRF token, and the cookie to set when it is new.
pub(super) fn page_csrf(
    st: &AppState,
    headers: &HeaderMap,
    secure: bool,
) -> (String, Option<HeaderValue>) {
    match csrf_token(headers, secure) {
        Some(t) => (t, None),
        None => {
            let t = super::request::new_session_id();
            let c = csrf_cookie(st, &t, secure);
            (t, Some(c))
        }
    }
}

/// A posted form's CSRF field matches the cookie and the request comes from our pages.
pub(super) fn form_csrf_ok(st: &AppState, headers: &HeaderMap, field: &str, secure: bool) -> bool {
    csrf_token(headers, secure).is_some_and(|t| bool::from(t.as_bytes().ct_eq(field.as_bytes())))
        && same_site_request(st, headers)
}

/// Renders `template` with a CSRF token added to `ctx`.
pub(super) fn render_form(
    st: &AppState,
    headers: &HeaderMap,
    secure: bool,
    template: &str,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    let (csrf, cookie) = page_csrf(st, headers, secure);
    let ctx = minijinja::context! { csrf => csrf, site_name => "HaLOS", prefix => st.config().path_prefix(), ..ctx };
    let mut r = render(st, template, status, ctx);
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The second-factor step: the TOTP form, the passkey button, or — with neither
/// enrolled — a message sending the user to `/settings`.
pub(super) async fn second_factor_page(
    st: &AppState,
    headers: &HeaderMap,
    secure: bool,
    status: StatusCode,
    user: &User,
    rd: &str,
    error: Option<&str>,
) -> Response {
    let has_totp = matches!(st.store.totp(&user.name).await, Ok(Some(_)));
    let has_passkeys = !st.config().webauthn.disable
        && st
            .store
            .passkeys(&user.name)
            .await
            .is_ok_and(|p| !p.is_empty());
    render_form(
        st,
        headers,
        secure,
        "second_factor.html",
        status,
        minijinja::context! {
            username => user.name, rd => rd, error => error,
            has_totp => has_totp, has_passkeys => has_passkeys,
        },
    )
}

/// Checks `code` for the session's user and raises the session to two factors.
async fn totp_step(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
    cd: &CookieDomain,
    su: &SessionUser,
    code: &str,
) -> Result<HeaderValue, LoginError> {
    let cfg = st.config();
    let ip = client_ip(peer, headers, &cfg.server.trusted_proxies);
    if code.len() > 16 {
        return Err(LoginError::Failed);
    }
    let now = st.clock.now();
    let skew = u16::try_from(cfg.totp.skew).unwrap_or(1);
    let result = verify_totp(
        &st.store,
        &cfg.regulation,
        skew,
        &su.user.name,
        ip,
        code,
        now,
    )
    .await;
    st.metrics.login(result.is_ok());
    result?;
    Ok(reissue_session(st, cd, &su.user, &su.session, |s| {
        s.level = AuthLevel::TwoFactor;
        s.auth_time = now;
        add_amr(&mut s.amr, &["otp", "mfa"]);
    })
    .await?
    .0)
}

#[derive(Debug, Deserialize)]
pub struct TotpForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login/totp`: the no-JavaScript TOTP form.
pub async fn totp_form(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<TotpForm>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let Some(su) = current_session(&st, &headers, &cd).await else {
        return see_other(&portal_step(&cd, "", &f.rd), StatusCode::SEE_OTHER);
    };
    if !form_csrf_ok(&st, &headers, &f.csrf, cd.secure) {
        let msg = "Your session form expired. Please try again.";
        return second_factor_page(
            &st,
            &headers,
            cd.secure,
            StatusCode::FORBIDDEN,
            &su.user,
            &f.rd,
            Some(msg),
        )
        .await;
    }
    match totp_step(&st, &peer, &headers, &cd, &su, &f.code).await {
        Ok(cookie) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let next = login_redirect(&st, &cd, &su.user, AuthLevel::TwoFactor, Some(&f.rd), ip)
                .map(|u| u.to_string())
                .unwrap_or_else(|| cd.portal.to_string());
            let mut r = see_other(&next, StatusCode::SEE_OTHER);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(LoginError::Failed) => {
            let msg = "That code is not valid. Wait for the next code and try again.";
            second_factor_page(
                &st,
                &headers,
                cd.secure,
                StatusCode::UNAUTHORIZED,
                &su.user,
                &f.rd,
                Some(msg),
            )
            .await
        }
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct TotpBody {
    token: String,
    #[serde(default, rename = "targetURL")]
    target_url: Option<String>,
}

/// `POST /api/secondfactor/totp` `{"token","targetURL"}`: answers like `/api/firstfactor`.
pub async fn api_totp(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<TotpBody>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("host not covered by a cookie domain".into()).into_response();
    };
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    let Some(su) = current_session(&st, &headers, &cd).await else {
        return ko_auth();
    };
    match totp_step(&st, &peer, &headers, &cd, &su, &b.token).await {
        Ok(cookie) => {
            let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
            let target = b.target_url.as_deref();
            let body = match login_redirect(&st, &cd, &su.user, AuthLevel::TwoFactor, target, ip) {
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
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

/// Why a password change did not happen.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChangeError {
    #[error("{0}")]
    Weak(#[from] WeakPassword),
    #[error("{0}")]
    Internal(String),
}

/// Hashes `new_password` and writes it through the users-file editor; the new users
/// database is installed at once, so every other session of the user (bound to the old
/// digest) ends on its next check. Returns the updated user.
pub(super) async fn set_password(
    st: &AppState,
    user: &User,
    new_password: &str,
    confirm: &str,
) -> Result<Arc<User>, ChangeError> {
    let inputs = [
        user.name.as_str(),
        user.displayname.as_str(),
        user.email.as_str(),
    ];
    check_new_password(new_password, confirm, &inputs)?;
    let argon2 = st
        .config()
        .authentication_backend
        .file
        .password
        .argon2
        .clone();
    let path = st.users.path().to_path_buf();
    let (name, pw) = (
        user.name.clone(),
        zeroize::Zeroizing::new(new_password.to_string()),
    );
    let db = tokio::task::spawn_blocking(move || {
        let digest = crate::users::hash_password(pw.as_bytes(), &argon2)
            .map_err(|e| ChangeError::Internal(e.to_string()))?;
        let change = UserChange::Update(
            name,
            UserPatch {
                password_digest: Some(digest),
                ..UserPatch::default()
            },
        );
        UsersFile::new(path)
            .apply(&change, |_| Ok(()))
            .map_err(|e| ChangeError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ChangeError::Internal(e.to_string()))??;
    st.users.install(db);
    tracing::info!(target: "audit", event = "password_change", user = %user.name, "password changed from the portal");
    st.users
        .snapshot()
        .active(&user.name)
        .cloned()
        .ok_or_else(|| ChangeError::Internal("user vanished".into()))
}

fn change_page(
    st: &AppState,
    headers: &HeaderMap,
    secure: bool,
    status: StatusCode,
    user: &User,
    rd: &str,
    error: Option<&str>,
) -> Response {
    render_form(
        st,
        headers,
        secure,
        "change_password.html",
        status,
        minijinja::context! { username => user.name, rd => rd, error => error },
    )
}

/// `GET /password/change`: the forced change of the default password.
pub async fn change_password_page(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<PortalQuery>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let rd = q.rd.as_deref().unwrap_or("");
    match pending_session(&st, &headers, &cd).await {
        Some(su) if su.session.must_change_password => {
            change_page(&st, &headers, cd.secure, StatusCode::OK, &su.user, rd, None)
        }
        Some(_) => see_other(&portal_step(&cd, "settings", ""), StatusCode::FOUND),
        None => see_other(&portal_step(&cd, "", rd), StatusCode::FOUND),
    }
}

#[derive(Deserialize)]
pub struct ChangePasswordForm {
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /password/change`.
pub async fn change_password_form(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<ChangePasswordForm>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let su = match pending_session(&st, &headers, &cd).await {
        Some(su) if su.session.must_change_password => su,
        _ => return see_other(&portal_step(&cd, "", &f.rd), StatusCode::SEE_OTHER),
    };
    if !form_csrf_ok(&st, &headers, &f.csrf, cd.secure) {
        let msg = "Your session form expired. Please try again.";
        return change_page(
            &st,
            &headers,
            cd.secure,
            StatusCode::FORBIDDEN,
            &su.user,
            &f.rd,
            Some(msg),
        );
    }
    let user = match set_password(&st, &su.user, &f.new_password, &f.confirm_password).await {
        Ok(u) => u,
        Err(ChangeError::Weak(w)) => {
            let msg = w.to_string();
            return change_page(
                &st,
                &headers,
                cd.secure,
                StatusCode::BAD_REQUEST,
                &su.user,
                &f.rd,
                Some(&msg),
            );
        }
        Err(ChangeError::Internal(e)) => return WebError::Internal(e).into_response(),
    };
    let now = st.clock.now();
    let cookie = match reissue_session(&st, &cd, &user, &su.session, |s| {
        s.must_change_password = false;
        s.reauth_at = now;
    })
    .await
    {
        Ok((c, _)) => c,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
    let next = if needs_second_factor(&st, &user, su.session.level, Some(&f.rd), ip) {
        portal_step(&cd, "", &f.rd)
    } else {
        login_redirect(&st, &cd, &user, su.session.level, Some(&f.rd), ip)
            .map(|u| u.to_string())
            .unwrap_or_else(|| cd.portal.to_string())
    };
    let mut r = see_other(&next, StatusCode::SEE_OTHER);
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}
