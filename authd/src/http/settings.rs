//! `/settings`: a signed-in user's second factors and password. Sensitive changes need
//! the password re-entered within the last [`REAUTH_WINDOW`] seconds.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

use super::AppState;
use super::error::WebError;
use super::portal::{cookie_domain, portal_step, see_other, unknown_host};
use super::request::client_ip;
use super::second_factor::{ChangeError, form_csrf_ok, render_form, set_password};
use super::session::{SessionUser, current_session, reissue_session};
use crate::auth::{Attempt, LoginError, first_factor};
use crate::second_factor::{code_step, new_registration, otpauth_uri, qr_svg, secret_base32};
use crate::site::CookieDomain;
use crate::store::{Store, TotpRecord};

/// How long a password re-entry unlocks sensitive settings.
pub const REAUTH_WINDOW: i64 = 300;
/// How long a TOTP secret waits for its confirming code.
const ENROL_TTL: i64 = 600;

pub(super) fn recently_authenticated(su: &SessionUser, now: i64) -> bool {
    su.session.reauth_at > 0 && now - su.session.reauth_at <= REAUTH_WINDOW
}

/// What the page shows besides the user's state.
#[derive(Default)]
pub(super) struct Notes<'a> {
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub enrol: Option<minijinja::Value>,
}

fn date(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

pub(super) async fn page(
    st: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    su: &SessionUser,
    notes: Notes<'_>,
) -> Response {
    let now = st.clock.now();
    let name = &su.user.name;
    let totp = match st.store.totp(name).await {
        Ok(t) => t.map(|t| date(t.created)),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let passkeys: Vec<minijinja::Value> = match st.store.passkeys(name).await {
        Ok(p) => p
            .into_iter()
            .map(|p| minijinja::context! { id => p.credential_id, name => p.name })
            .collect(),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let cfg = st.config();
    render_form(
        st,
        headers,
        session_secure(st, su),
        "settings.html",
        status,
        minijinja::context! {
            username => name, recent => recently_authenticated(su, now),
            notice => notes.notice, error => notes.error, enrol => notes.enrol,
            totp => totp, totp_enabled => !cfg.totp.disable,
            webauthn_enabled => !cfg.webauthn.disable, passkeys => passkeys,
        },
    )
}

/// Whether the session's cookie domain is served over https (its CSRF cookie's name).
fn session_secure(st: &AppState, su: &SessionUser) -> bool {
    st.site()
        .cookie_domains
        .iter()
        .find(|c| c.domain == su.session.cookie_domain)
        .is_none_or(|c| c.secure)
}

/// The signed-in session, or a redirect to the portal.
async fn signed_in(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
) -> Result<(CookieDomain, SessionUser), Response> {
    let Some(cd) = cookie_domain(st, peer, headers) else {
        return Err(unknown_host(st));
    };
    match current_session(st, headers, &cd).await {
        Some(su) => Ok((cd, su)),
        None => {
            let back = cd
                .portal
                .join("settings")
                .map(|u| u.to_string())
                .unwrap_or_default();
            Err(see_other(&portal_step(&cd, "", &back), StatusCode::FOUND))
        }
    }
}

/// `GET /settings`.
pub async fn settings_page(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match signed_in(&st, &peer, &headers).await {
        Ok((_, su)) => page(&st, &headers, StatusCode::OK, &su, Notes::default()).await,
        Err(r) => r,
    }
}

const EXPIRED: &str = "Your session form expired. Please try again.";
const NEED_REAUTH: &str = "Enter your password again first.";

/// Common gate of the POST handlers: signed in, CSRF-checked, and (when `sensitive`)
/// recently re-authenticated.
async fn gate(
    st: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
    csrf: &str,
    sensitive: bool,
) -> Result<(CookieDomain, SessionUser), Response> {
    let (cd, su) = signed_in(st, peer, headers).await?;
    if !form_csrf_ok(st, headers, csrf, cd.secure) {
        let notes = Notes {
            error: Some(EXPIRED),
            ..Notes::default()
        };
        return Err(page(st, headers, StatusCode::FORBIDDEN, &su, notes).await);
    }
    if sensitive && !recently_authenticated(&su, st.clock.now()) {
        let notes = Notes {
            error: Some(NEED_REAUTH),
            ..Notes::default()
        };
        return Err(page(st, headers, StatusCode::FORBIDDEN, &su, notes).await);
    }
    Ok((cd, su))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct ReauthForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

/// `POST /settings/reauth`: the password again (regulated like a login).
pub async fn reauth(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<ReauthForm>,
) -> Response {
    let (_, su) = match gate(&st, &peer, &headers, &f.csrf, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = st.clock.now();
    let attempt = Attempt {
        username: &su.user.name,
        password: &f.password,
        client_ip: client_ip(&peer, &headers, &st.config().server.trusted_proxies),
        now,
    };
    match first_factor(&st.authenticator(), attempt).await {
        Ok(_) => {
            let mut s = (*su.session).clone();
            s.reauth_at = now;
            if let Err(e) = st.store.save_session(s.clone()).await {
                return WebError::Internal(e.to_string()).into_response();
            }
            let su = SessionUser {
                session: std::sync::Arc::new(s),
                user: su.user,
            };
            page(&st, &headers, StatusCode::OK, &su, Notes::default()).await
        }
        Err(LoginError::Failed) => {
            let notes = Notes {
                error: Some("Incorrect password."),
                ..Notes::default()
            };
            page(&st, &headers, StatusCode::UNAUTHORIZED, &su, notes).await
        }
        Err(LoginError::Busy) => WebError::Busy.into_response(),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

fn enrol_key(su: &SessionUser) -> String {
    format!("totp-enrol:{}", hex::encode(su.session.key))
}

fn enrol_view(st: &AppState, su: &SessionUser, r: &TotpRecord) -> minijinja::Value {
    let issuer = st.config().totp.issuer.clone();
    let uri = otpauth_uri(r, &issuer, &su.user.name).unwrap_or_default();
    let qr = qr_svg(&uri)
        .map(|svg| {
            format!(
                "data:image/svg+xml;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(svg)
            )
        })
        .unwrap_or_default();
    minijinja::context! { uri => uri, qr => qr, secret => secret_base32(r) }
}

/// `POST /settings/totp/start`: a new secret, shown with its QR code until confirmed.
pub async fn totp_start(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let (_, su) = match gate(&st, &peer, &headers, &f.csrf, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if st.config().totp.disable {
        return WebError::Forbidden.into_response();
    }
    let now = st.clock.now();
    let record = new_registration(&st.config().totp, now);
    let data = match serde_json::to_string(&record) {
        Ok(d) => d,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    if let Err(e) = st
        .store
        .put_ceremony(&enrol_key(&su), data, now + ENROL_TTL)
        .await
    {
        return WebError::Internal(e.to_string()).into_response();
    }
    let notes = Notes {
        enrol: Some(enrol_view(&st, &su, &record)),
        ..Notes::default()
    };
    page(&st, &headers, StatusCode::OK, &su, notes).await
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// `POST /settings/totp/confirm`: the first code proves the app has the secret.
pub async fn totp_confirm(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let (_, su) = match gate(&st, &peer, &headers, &f.csrf, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = st.clock.now();
    let key = enrol_key(&su);
    let pending = match st.store.take_ceremony(&key, now).await {
        Ok(p) => p.and_then(|d| serde_json::from_str::<TotpRecord>(&d).ok()),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let Some(mut record) = pending else {
        let notes = Notes {
            error: Some("The setup expired. Start again."),
            ..Notes::default()
        };
        return page(&st, &headers, StatusCode::BAD_REQUEST, &su, notes).await;
    };
    let skew = u16::try_from(st.config().totp.skew).unwrap_or(1);
    let Some(step) = code_step(&record, &f.code, now, skew) else {
        // Keep the same secret for another try (the app already has it).
        let data = serde_json::to_string(&record).unwrap_or_default();
        if let Err(e) = st
            .store
            .put_ceremony(&key, data, record.created + ENROL_TTL)
            .await
        {
            return WebError::Internal(e.to_string()).into_response();
        }
        let notes = Notes {
            error: Some("That code is not valid. Check the app and try again."),
            enrol: Some(enrol_view(&st, &su, &record)),
            ..Notes::default()
        };
        return page(&st, &headers, StatusCode::BAD_REQUEST, &su, notes).await;
    };
    // The confirming code is used: it cannot also log in.
    record.last_used_step = step;
    record.created = now;
    if let Err(e) = st.store.save_totp(&su.user.name, record).await {
        return WebError::Internal(e.to_string()).into_response();
    }
    tracing::info!(target: "audit", event = "totp_enrolled", user = %su.user.name);
    let notes = Notes {
        notice: Some("Authenticator app set up."),
        ..Notes::default()
    };
    page(&st, &headers, StatusCode::OK, &su, notes).await
}

/// `POST /settings/totp/delete`.
pub async fn totp_delete(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let (_, su) = match gate(&st, &peer, &headers, &f.csrf, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = st.store.delete_totp(&su.user.name).await {
        return WebError::Internal(e.to_string()).into_response();
    }
    tracing::info!(target: "audit", event = "totp_removed", user = %su.user.name);
    let notes = Notes {
        notice: Some("Authenticator app removed."),
        ..Notes::default()
    };
    page(&st, &headers, StatusCode::OK, &su, notes).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// `POST /settings/password`: ends the user's other sessions, keeps this one (re-issued).
pub async fn password(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let (cd, su) = match gate(&st, &peer, &headers, &f.csrf, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = match set_password(&st, &su.user, &f.new_password, &f.confirm_password).await {
        Ok(u) => u,
        Err(ChangeError::Weak(w)) => {
            let msg = w.to_string();
            let notes = Notes {
                error: Some(&msg),
                ..Notes::default()
            };
            return page(&st, &headers, StatusCode::BAD_REQUEST, &su, notes).await;
        }
        Err(ChangeError::Internal(e)) => return WebError::Internal(e).into_response(),
    };
    let (cookie, session) = match reissue_session(&st, &cd, &user, &su.session, |_| {}).await {
        Ok(x) => x,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let su = SessionUser { session, user };
    let notes = Notes {
        notice: Some("Password changed. Other sessions were signed out."),
        ..Notes::default()
    };
    let mut r = page(&st, &headers, StatusCode::OK, &su, notes).await;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}
