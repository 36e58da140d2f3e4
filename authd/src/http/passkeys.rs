//! Passkeys (WebAuthn): registration from `/settings` and passwordless, discoverable
//! sign-in from the portal. The relying party is the host the portal was reached on,
//! so each hostname keeps its own passkeys. Ceremony state stays on the server under a
//! short-lived cookie, single use.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::AppState;
use super::error::WebError;
use super::portal::{cookie_domain, csrf_token, ko_auth, login_redirect, same_site_request};
use super::request::{client_ip, cookies, header as hdr, is_trusted, request_scheme, strip_port};
use super::second_factor::form_csrf_ok;
use super::session::{NewSession, current_session, pending_session, start_session};
use super::settings::{Notes, page, recently_authenticated};
use crate::store::{AuthLevel, PasskeyRecord, Store};

const CEREMONY_COOKIE: &str = "halos_webauthn";

/// The origin the browser is on (scheme, host and port of the request).
fn request_origin(st: &AppState, peer: &SocketAddr, headers: &HeaderMap) -> Option<Url> {
    let trusted = &st.config().server.trusted_proxies;
    let raw = if is_trusted(peer, trusted) {
        hdr(headers, "x-forwarded-host").or_else(|| hdr(headers, "host"))
    } else {
        hdr(headers, "host")
    }?;
    let raw = raw.split(',').next()?.trim();
    let scheme = request_scheme(peer, headers, trusted);
    Url::parse(&format!("{scheme}://{raw}")).ok()
}

/// The relying party for this request: RP ID = the portal's host, origin = its origin.
fn webauthn(st: &AppState, peer: &SocketAddr, headers: &HeaderMap) -> Option<Webauthn> {
    let cfg = st.config();
    if cfg.webauthn.disable {
        return None;
    }
    let origin = request_origin(st, peer, headers)?;
    let rp_id = strip_port(origin.host_str()?).to_ascii_lowercase();
    // Only hosts we serve a portal for.
    st.site().cookie_domain_for(&rp_id)?;
    WebauthnBuilder::new(&rp_id, &origin)
        .ok()?
        .rp_name(&cfg.webauthn.display_name)
        .timeout(cfg.webauthn.timeout.0)
        .build()
        .ok()
}

/// The WebAuthn user handle of `username`: stable, opaque, derived from its OIDC subject.
async fn user_handle(st: &AppState, username: &str) -> Result<Uuid, WebError> {
    let sub = st
        .store
        .subject(username)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let h = Sha256::digest(format!("halos-webauthn:{sub}").as_bytes());
    Uuid::from_slice(&h[..16]).map_err(|e| WebError::Internal(e.to_string()))
}

fn ceremony_key(kind: &str, id: &str) -> String {
    format!(
        "webauthn-{kind}:{}",
        hex::encode(Sha256::digest(id.as_bytes()))
    )
}

/// Starts a ceremony: keeps `state` server-side under a fresh cookie id.
async fn put_state(
    st: &AppState,
    kind: &str,
    state: &Value,
    secure: bool,
) -> Result<HeaderValue, WebError> {
    let id = super::request::new_session_id();
    let ttl = st.config().webauthn.timeout.as_secs() as i64 + 30;
    st.store
        .put_ceremony(
            &ceremony_key(kind, &id),
            state.to_string(),
            st.clock.now() + ttl,
        )
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let prefix = st.config().path_prefix().to_string();
    let path = if prefix.is_empty() {
        "/".to_string()
    } else {
        prefix
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{CEREMONY_COOKIE}={id}; Path={path}; Max-Age={ttl}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|e| WebError::Internal(e.to_string()))
}

/// Takes the ceremony's state (single use).
async fn take_state(st: &AppState, headers: &HeaderMap, kind: &str) -> Option<Value> {
    for id in cookies(headers, CEREMONY_COOKIE) {
        if let Ok(Some(s)) = st
            .store
            .take_ceremony(&ceremony_key(kind, id), st.clock.now())
            .await
        {
            return serde_json::from_str(&s).ok();
        }
    }
    None
}

fn api_csrf_ok(st: &AppState, headers: &HeaderMap, secure: bool) -> bool {
    let sent = hdr(headers, "x-csrf-token").unwrap_or("");
    same_site_request(st, headers)
        && csrf_token(headers, secure)
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(sent.as_bytes())))
}

fn json_ok(body: Value, cookie: Option<HeaderValue>) -> Response {
    let mut r = Json(body).into_response();
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn ko(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"status": "KO", "message": message}))).into_response()
}

/// `POST /api/webauthn/register/start`: needs a session with a recent password entry.
pub async fn register_start(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("unknown host".into()).into_response();
    };
    if !api_csrf_ok(&st, &headers, cd.secure) {
        return WebError::Forbidden.into_response();
    }
    let Some(su) = current_session(&st, &headers, &cd).await else {
        return ko_auth();
    };
    if !recently_authenticated(&su, st.clock.now()) {
        return ko(StatusCode::FORBIDDEN, "Enter your password again first.");
    }
    let Some(wa) = webauthn(&st, &peer, &headers) else {
        return ko(
            StatusCode::BAD_REQUEST,
            "Passkeys are not available on this address.",
        );
    };
    let handle = match user_handle(&st, &su.user.name).await {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let existing = match st.store.passkeys(&su.user.name).await {
        Ok(p) => p,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let exclude = existing
        .iter()
        .filter_map(|p| serde_json::from_value::<Passkey>(p.passkey.clone()).ok())
        .map(|p| p.cred_id().clone())
        .collect::<Vec<_>>();
    let display = if su.user.displayname.is_empty() {
        su.user.name.as_str()
    } else {
        su.user.displayname.as_str()
    };
    let (ccr, reg) =
        match wa.start_passkey_registration(handle, &su.user.name, display, Some(exclude)) {
            Ok(x) => x,
            Err(e) => return WebError::Internal(e.to_string()).into_response(),
        };
    let state = json!({"user": su.user.name, "reg": reg});
    let secure = request_scheme(&peer, &headers, &st.config().server.trusted_proxies) == "https";
    let cookie = match put_state(&st, "reg", &state, secure).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut options = serde_json::to_value(&ccr).unwrap_or(Value::Null);
    // Discoverable ("resident") credentials, so the passkey can sign in without a user name.
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(Value::as_object_mut)
    {
        sel.insert("residentKey".into(), json!("required"));
        sel.insert("requireResidentKey".into(), json!(true));
    }
    json_ok(options, Some(cookie))
}

#[derive(Deserialize)]
pub struct RegisterFinish {
    #[serde(default)]
    name: String,
    credential: RegisterPublicKeyCredential,
}

/// `POST /api/webauthn/register/finish` `{"name","credential"}`.
pub async fn register_finish(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<RegisterFinish>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("unknown host".into()).into_response();
    };
    if !api_csrf_ok(&st, &headers, cd.secure) {
        return WebError::Forbidden.into_response();
    }
    let Some(su) = current_session(&st, &headers, &cd).await else {
        return ko_auth();
    };
    let Some(wa) = webauthn(&st, &peer, &headers) else {
        return ko(
            StatusCode::BAD_REQUEST,
            "Passkeys are not available on this address.",
        );
    };
    let Some(state) = take_state(&st, &headers, "reg").await else {
        return ko(
            StatusCode::BAD_REQUEST,
            "The passkey request expired. Try again.",
        );
    };
    if state.get("user").and_then(Value::as_str) != Some(su.user.name.as_str()) {
        return WebError::Forbidden.into_response();
    }
    let Some(reg) = state
        .get("reg")
        .and_then(|r| serde_json::from_value::<PasskeyRegistration>(r.clone()).ok())
    else {
        return WebError::Internal("bad registration state".into()).into_response();
    };
    let passkey = match wa.finish_passkey_registration(&b.credential, &reg) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(user = %su.user.name, error = %e, "passkey registration refused");
            return ko(
                StatusCode::BAD_REQUEST,
                "The passkey could not be verified.",
            );
        }
    };
    let raw_id: &[u8] = passkey.cred_id();
    let id = URL_SAFE_NO_PAD.encode(raw_id);
    match st.store.passkey(&id).await {
        Ok(None) => {}
        Ok(Some(_)) => return ko(StatusCode::CONFLICT, "This passkey is already registered."),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    }
    let name: String = b
        .name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let record = PasskeyRecord {
        credential_id: id,
        username: su.user.name.clone(),
        name: if name.is_empty() {
            "Passkey".into()
        } else {
            name
        },
        created: st.clock.now(),
        last_used: None,
        passkey: serde_json::to_value(&passkey).unwrap_or(Value::Null),
    };
    if let Err(e) = st.store.save_passkey(record).await {
        return WebError::Internal(e.to_string()).into_response();
    }
    tracing::info!(target: "audit", event = "passkey_registered", user = %su.user.name);
    json_ok(json!({"status": "OK"}), None)
}

/// `POST /api/webauthn/login/start`: a challenge for any discoverable passkey.
pub async fn login_start(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    let enabled = st.config().webauthn.enable_passkey_login;
    let Some(wa) = webauthn(&st, &peer, &headers).filter(|_| enabled) else {
        return ko(
            StatusCode::BAD_REQUEST,
            "Passkeys are not available on this address.",
        );
    };
    let (rcr, auth) = match wa.start_discoverable_authentication() {
        Ok(x) => x,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let secure = request_scheme(&peer, &headers, &st.config().server.trusted_proxies) == "https";
    let cookie = match put_state(&st, "auth", &json!(auth), secure).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut options = serde_json::to_value(&rcr).unwrap_or(Value::Null);
    // A button press, not autofill: the browser shows its normal passkey dialog.
    if let Some(o) = options.as_object_mut() {
        o.remove("mediation");
    }
    json_ok(options, Some(cookie))
}

#[derive(Deserialize)]
pub struct LoginFinish {
    credential: PublicKeyCredential,
    #[serde(default, rename = "targetURL")]
    target_url: Option<String>,
}

/// `POST /api/webauthn/login/finish` `{"credential","targetURL"}`: answers like
/// `/api/firstfactor`. With user verification the session has two factors.
pub async fn login_finish(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<LoginFinish>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("unknown host".into()).into_response();
    };
    if !same_site_request(&st, &headers) {
        return WebError::Forbidden.into_response();
    }
    let Some(wa) = webauthn(&st, &peer, &headers) else {
        return ko_auth();
    };
    let Some(state) = take_state(&st, &headers, "auth").await else {
        return ko_auth();
    };
    let Ok(auth) = serde_json::from_value::<DiscoverableAuthentication>(state) else {
        return ko_auth();
    };
    let Ok((handle, cred_id)) = wa.identify_discoverable_authentication(&b.credential) else {
        return ko_auth();
    };
    let id = URL_SAFE_NO_PAD.encode(cred_id);
    let mut record = match st.store.passkey(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return ko_auth(),
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let users = st.users.snapshot();
    let Some(user) = users.active(&record.username).cloned() else {
        return ko_auth();
    };
    match user_handle(&st, &user.name).await {
        Ok(h) if h == handle => {}
        Ok(_) => return ko_auth(),
        Err(e) => return e.into_response(),
    }
    let Ok(mut passkey) = serde_json::from_value::<Passkey>(record.passkey.clone()) else {
        return WebError::Internal("stored passkey unreadable".into()).into_response();
    };
    let ip = client_ip(&peer, &headers, &st.config().server.trusted_proxies);
    let result = match wa.finish_discoverable_authentication_v2(&b.credential, auth, &passkey) {
        Ok(r) => r,
        Err(e) => {
            st.metrics.login(false);
            tracing::info!(target: "audit", event = "login", result = "failure", user = %user.name, ip = %ip, factor = "passkey", error = %e);
            return ko_auth();
        }
    };
    let now = st.clock.now();
    passkey.update_credential(&result);
    record.passkey = serde_json::to_value(&passkey).unwrap_or(record.passkey);
    record.last_used = Some(now);
    if let Err(e) = st.store.save_passkey(record).await {
        return WebError::Internal(e.to_string()).into_response();
    }
    let uv = result.user_verified();
    let level = if uv && st.config().webauthn.passkey_uv_two_factor {
        AuthLevel::TwoFactor
    } else {
        AuthLevel::OneFactor
    };
    let amr: Vec<String> = if uv {
        vec!["hwk".into(), "user".into(), "mfa".into()]
    } else {
        vec!["hwk".into()]
    };
    st.metrics.login(true);
    tracing::info!(target: "audit", event = "login", result = "success", user = %user.name, ip = %ip, factor = "passkey", user_verified = uv);
    let previous = pending_session(&st, &headers, &cd).await.map(|s| s.session);
    let login = NewSession {
        level,
        remember_me: false,
        amr,
        must_change_password: false,
    };
    let cookie = match start_session(&st, &cd, &user, login, previous.as_deref()).await {
        Ok(c) => c,
        Err(e) => return WebError::Internal(e.to_string()).into_response(),
    };
    let body = match login_redirect(&st, &cd, &user, level, b.target_url.as_deref(), ip) {
        Some(u) => json!({"status": "OK", "data": {"redirect": u.as_str()}}),
        None => json!({"status": "OK"}),
    };
    json_ok(body, Some(cookie))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

/// `POST /settings/passkeys/delete`.
pub async fn delete(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<DeleteForm>,
) -> Response {
    let Some(cd) = cookie_domain(&st, &peer, &headers) else {
        return WebError::BadRequest("unknown host".into()).into_response();
    };
    let Some(su) = current_session(&st, &headers, &cd).await else {
        return super::portal::see_other(cd.portal.as_str(), StatusCode::SEE_OTHER);
    };
    let now = st.clock.now();
    let (status, notes) = if !form_csrf_ok(&st, &headers, &f.csrf, cd.secure) {
        (
            StatusCode::FORBIDDEN,
            Notes {
                error: Some("Your session form expired. Please try again."),
                ..Notes::default()
            },
        )
    } else if !recently_authenticated(&su, now) {
        (
            StatusCode::FORBIDDEN,
            Notes {
                error: Some("Enter your password again first."),
                ..Notes::default()
            },
        )
    } else {
        match st.store.delete_passkey(&su.user.name, &f.id).await {
            Ok(true) => {
                tracing::info!(target: "audit", event = "passkey_removed", user = %su.user.name);
                (
                    StatusCode::OK,
                    Notes {
                        notice: Some("Passkey removed."),
                        ..Notes::default()
                    },
                )
            }
            Ok(false) => (
                StatusCode::NOT_FOUND,
                Notes {
                    error: Some("No such passkey."),
                    ..Notes::default()
                },
            ),
            Err(e) => return WebError::Internal(e.to_string()).into_response(),
        }
    };
    page(&st, &headers, status, &su, notes).await
}

/// `GET /static/webauthn.js`.
pub async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("../../static/webauthn.js"),
    )
        .into_response()
}
