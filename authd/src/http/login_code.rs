//! Redeeming one-time login codes (DESIGN §11): `GET|POST /login-code` (the form) and
//! `POST /api/logincode` (JSON). A valid code starts a one-factor session (`amr`
//! `["code"]`, always a new session id) and leads to `/settings`, where the user enrols
//! a passkey or TOTP. A user whose password is still the documented default must change
//! it first, as after a password sign-in: the code is no way around that.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use url::Url;

use super::AppState;
use super::error::WebError;
use super::portal::{
    cookie_domain, csrf_cookie, csrf_token, portal_step, render, same_site_request, see_other,
    unknown_host,
};
use super::request::client_ip;
use super::session::{NewSession, pending_session, start_session};
use crate::login_code::{LoginCodeError, redeem};
use crate::second_factor::DEFAULT_PASSWORD;
use crate::site::CookieDomain;
use crate::store::AuthLevel;
use crate::users::User;

const INVALID: &str = "This code is invalid, used or expired.";

/// Where a code login lands: the portal's settings page.
fn settings_url(cd: &CookieDomain) -> Url {
    cd.portal
        .join("settings")
        .unwrap_or_else(|_| cd.portal.clone())
}

fn page(
    st: &AppState,
    headers: &HeaderMap,
    secure: bool,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (token, fresh) = match csrf_token(headers, secure) {
        Some(t) => (t, false),
        None => (super::request::new_session_id(), true),
    };
    let mut r = render(
        st,
        "login_code.html",
        status,
        minijinja::context! {
            site_name => "HaLOS", prefix => st.config().path_prefix(), csrf => token, error => error,
        },
    );
    if fresh {
        r.headers_mut()
            .append(header::SET_COOKIE, csrf_cookie(st, &token, secure));
    }
    r
}

/// `GET /login-code`.
pub async fn form_page(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    page(&st, &headers, cd.secure, StatusCode::OK, None)
}

/// Whether `user`'s password is still the documented default. One hash, only on a
/// successful redemption; when the verifier cannot tell (busy), the answer is yes: the
/// change page is harmless, a default password left in place is not.
async fn has_default_password(st: &AppState, user: &User) -> bool {
    st.verifier
        .verify(DEFAULT_PASSWORD, Some(user.digest.clone()))
        .await
        .unwrap_or(true)
}

/// Redeems the code and starts the session; returns where to go and the cookie.
async fn sign_in(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
    cd: &CookieDomain,
    code: &str,
) -> Result<(String, axum::http::HeaderValue), LoginCodeError> {
    if code.len() > 64 {
        return Err(LoginCodeError::Invalid);
    }
    let ip = client_ip(peer, headers, &st.config().server.trusted_proxies);
    let users = st.users.snapshot();
    let regulation = st.config().regulation.clone();
    let user = redeem(&st.store, &users, &regulation, ip, code, st.clock.now()).await;
    st.metrics.login(user.is_ok());
    let user = user?;
    let must_change = has_default_password(st, &user).await;
    if must_change {
        tracing::info!(target: "audit", event = "default_password", user = %user.name, "login code for a user with the default password: change required");
    }
    // The session being replaced, even one waiting for a password change.
    let previous = pending_session(st, headers, cd).await.map(|s| s.session);
    let login = NewSession {
        level: AuthLevel::OneFactor,
        remember_me: false,
        amr: vec!["code".into()],
        must_change_password: must_change,
    };
    let cookie = start_session(st, cd, &user, login, previous.as_deref()).await?;
    let next = if must_change {
        portal_step(cd, "password/change", settings_url(cd).as_str())
    } else {
        settings_url(cd).to_string()
    };
    Ok((next, cookie))
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login-code`: the no-JavaScript form.
pub async fn form_submit(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return unknown_host(&st);
    };
    let csrf_ok = csrf_token(&headers, cd.secure)
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(f.csrf.as_bytes())));
    if !csrf_ok || !same_site_request(&st, &headers) {
        return page(
            &st,
            &headers,
            cd.secure,
            StatusCode::FORBIDDEN,
            Some("Your session form expired. Please try again."),
        );
    }
    match sign_in(&st, &peer, &headers, &cd, &f.code).await {
        Ok((next, cookie)) => {
            let mut r = see_other(&next, StatusCode::SEE_OTHER);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(LoginCodeError::Invalid) => page(
            &st,
            &headers,
            cd.secure,
            StatusCode::UNAUTHORIZED,
            Some(INVALID),
        ),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CodeBody {
    code: String,
}

/// `POST /api/logincode {"code": "…"}`.
pub async fn api(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<CodeBody>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("host not covered by a cookie domain".into()).into_response();
    };
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    match sign_in(&st, &peer, &headers, &cd, &b.code).await {
        Ok((next, cookie)) => {
            let mut r = Json(json!({"status": "OK", "data": {"redirect": next}})).into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(LoginCodeError::Invalid) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "KO", "message": INVALID})),
        )
            .into_response(),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}
