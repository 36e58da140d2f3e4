//! Redeeming one-time login codes (DESIGN §11): `GET|POST /login-code` (the form) and
//! `POST /api/logincode` (JSON). A valid code starts a one-factor session (`amr`
//! `["code"]`, always a new session id) and leads to `/settings`, where the user enrols
//! a passkey or TOTP.

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
    cookie_domain, csrf_cookie, csrf_token, render, same_site_request, see_other, unknown_host,
};
use super::request::client_ip;
use super::session::{current_session, start_session};
use crate::login_code::{LoginCodeError, redeem};
use crate::site::CookieDomain;
use crate::store::AuthLevel;

const INVALID: &str = "This code is invalid, used or expired.";

/// Where a code login lands: the portal's settings page.
fn settings_url(cd: &CookieDomain) -> Url {
    cd.portal
        .join("settings")
        .unwrap_or_else(|_| cd.portal.clone())
}

fn page(st: &AppState, headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let (token, fresh) = match csrf_token(headers) {
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
            .append(header::SET_COOKIE, csrf_cookie(st, &token));
    }
    r
}

/// `GET /login-code`.
pub async fn form_page(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if cookie_domain(&st, &peer, &headers).is_none() {
        return unknown_host(&st);
    }
    page(&st, &headers, StatusCode::OK, None)
}

/// Redeems the code and starts the session; returns where to go and the cookie.
async fn sign_in(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
    cd: &CookieDomain,
    code: &str,
) -> Result<(Url, axum::http::HeaderValue), LoginCodeError> {
    if code.len() > 64 {
        return Err(LoginCodeError::Invalid);
    }
    let ip = client_ip(peer, headers, &st.config().server.trusted_proxies);
    let users = st.users.snapshot();
    let regulation = st.config().regulation.clone();
    let user = redeem(&st.store, &users, &regulation, ip, code, st.clock.now()).await;
    st.metrics.login(user.is_ok());
    let user = user?;
    let previous = current_session(st, headers, cd).await.map(|s| s.session);
    let cookie = start_session(
        st,
        cd,
        &user,
        AuthLevel::OneFactor,
        false,
        vec!["code".into()],
        previous.as_deref(),
    )
    .await?;
    Ok((settings_url(cd), cookie))
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
    let csrf_ok =
        csrf_token(&headers).is_some_and(|t| bool::from(t.as_bytes().ct_eq(f.csrf.as_bytes())));
    if !csrf_ok || !same_site_request(&st, &headers) {
        return page(
            &st,
            &headers,
            StatusCode::FORBIDDEN,
            Some("Your session form expired. Please try again."),
        );
    }
    match sign_in(&st, &peer, &headers, &cd, &f.code).await {
        Ok((next, cookie)) => {
            let mut r = see_other(next.as_str(), StatusCode::SEE_OTHER);
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(LoginCodeError::Invalid) => {
            page(&st, &headers, StatusCode::UNAUTHORIZED, Some(INVALID))
        }
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
            let mut r =
                Json(json!({"status": "OK", "data": {"redirect": next.as_str()}})).into_response();
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
