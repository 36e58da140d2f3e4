//! HTTP surface (DESIGN §5): thin axum handlers over the domain core.
//!
//! Everything is mounted under the configured path prefix (`/sso` by default). Errors
//! from the layers below become responses in exactly one place, [`error::WebError`].

pub mod authz;
pub mod error;
pub mod login_code;
pub mod oidc;
pub mod passkeys;
pub mod portal;
pub mod request;
pub mod second_factor;
pub mod serve;
pub mod session;
pub mod settings;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::site::Site;
use crate::store::{AnyStore, Store};
use crate::users::store::UsersStore;
use crate::users::verifier::PasswordVerifier;

/// Shared, cheaply cloneable state of the running daemon.
#[derive(Clone)]
pub struct AppState {
    /// Swapped as a whole when authd.yml is reloaded (SIGHUP).
    pub config: Arc<ArcSwap<Config>>,
    pub users: UsersStore,
    pub verifier: PasswordVerifier,
    pub store: AnyStore,
    pub clock: SharedClock,
    pub site: Arc<ArcSwap<Site>>,
    pub templates: Arc<minijinja::Environment<'static>>,
    pub oidc: Arc<oidc::Oidc>,
    pub clients_status: Arc<std::sync::Mutex<crate::reload::ClientsStatus>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Session ids seen recently and their store keys (forward auth's hot path).
    pub session_keys: Arc<request::SessionKeyMemo>,
}

impl AppState {
    /// The configuration in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The password checker over this state's users, verifier and store.
    pub fn authenticator(&self) -> crate::auth::Authenticator<'_, AnyStore> {
        crate::auth::Authenticator {
            users: &self.users,
            verifier: &self.verifier,
            store: &self.store,
            regulation: self.config().regulation.clone(),
        }
    }

    /// The current site snapshot (cookie domains, redirect and access rules).
    pub fn site(&self) -> arc_swap::Guard<Arc<Site>> {
        self.site.load()
    }
}

/// Route paths, shared by the router and anything that advertises them.
pub mod paths {
    pub const HEALTH: &str = "/api/health";
    pub const STATE: &str = "/api/state";
    pub const FORWARD_AUTH: &str = "/api/authz/forward-auth";
    pub const AUTH_REQUEST: &str = "/api/authz/auth-request";
    pub const VERIFY: &str = "/api/verify";
    pub const FIRST_FACTOR: &str = "/api/firstfactor";
    pub const API_LOGOUT: &str = "/api/logout";
    pub const LOGOUT: &str = "/logout";
    pub const LOGIN_FORM: &str = "/login";
    pub const LOGIN_CODE_FORM: &str = "/login-code";
    pub const LOGIN_CODE_API: &str = "/api/logincode";
    pub const SECOND_FACTOR_TOTP: &str = "/api/secondfactor/totp";
    pub const TOTP_FORM: &str = "/login/totp";
    pub const CHANGE_PASSWORD: &str = "/password/change";
    pub const SETTINGS: &str = "/settings";
}

pub fn router(state: AppState) -> Router {
    let prefix = state.config().path_prefix().to_string();
    let max_body = state.config().server.max_body_bytes;
    let state_timeout = state.config().server.request_timeout.0;
    let api = Router::new()
        .route(paths::HEALTH, get(health).head(health))
        .route(paths::STATE, get(portal::api_state))
        .route(paths::FIRST_FACTOR, post(portal::api_firstfactor))
        .route(paths::API_LOGOUT, post(portal::api_logout))
        .route(paths::LOGOUT, get(portal::logout))
        .route(paths::LOGIN_FORM, post(portal::login_form))
        .route(
            paths::LOGIN_CODE_FORM,
            get(login_code::form_page).post(login_code::form_submit),
        )
        .route(paths::LOGIN_CODE_API, post(login_code::api))
        .route(paths::SECOND_FACTOR_TOTP, post(second_factor::api_totp))
        .route(paths::TOTP_FORM, post(second_factor::totp_form))
        .route(
            paths::CHANGE_PASSWORD,
            get(second_factor::change_password_page).post(second_factor::change_password_form),
        )
        .route(paths::SETTINGS, get(settings::settings_page))
        .route("/settings/reauth", post(settings::reauth))
        .route("/settings/totp/start", post(settings::totp_start))
        .route("/settings/totp/confirm", post(settings::totp_confirm))
        .route("/settings/totp/delete", post(settings::totp_delete))
        .route("/settings/password", post(settings::password))
        .route("/settings/passkeys/delete", post(passkeys::delete))
        .route(
            "/api/webauthn/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/api/webauthn/register/finish",
            post(passkeys::register_finish),
        )
        .route("/api/webauthn/login/start", post(passkeys::login_start))
        .route("/api/webauthn/login/finish", post(passkeys::login_finish))
        .route("/static/webauthn.js", get(passkeys::script))
        .route("/", get(portal::portal))
        .route("/static/portal.css", get(portal::stylesheet))
        .route(
            crate::oidc::paths::OPENID_CONFIGURATION,
            get(oidc::discovery),
        )
        .route(
            crate::oidc::paths::OAUTH_AUTHORIZATION_SERVER,
            get(oidc::discovery),
        )
        .route(crate::oidc::paths::JWKS, get(oidc::jwks))
        .route(
            crate::oidc::paths::AUTHORIZATION,
            get(oidc::authorization).post(oidc::authorization),
        )
        .route(crate::oidc::paths::TOKEN, post(oidc::token))
        .route(
            crate::oidc::paths::USERINFO,
            get(oidc::userinfo).post(oidc::userinfo),
        )
        .route(crate::oidc::paths::INTROSPECTION, post(oidc::introspection))
        .route(crate::oidc::paths::REVOCATION, post(oidc::revocation))
        .route(
            crate::oidc::paths::END_SESSION,
            get(oidc::end_session).post(oidc::end_session),
        );
    let metrics_here = {
        let m = &state.config().telemetry.metrics;
        m.enabled && m.address.is_none()
    };
    let api = if metrics_here {
        api.route("/metrics", get(metrics))
    } else {
        api
    };
    let app = if prefix.is_empty() {
        api
    } else {
        // Nesting serves `/sso` but not `/sso/`, which is where redirects send browsers.
        Router::new()
            .route(&format!("{prefix}/"), get(portal::portal))
            .nest(&prefix, api)
    };
    let app = app
        .layer(RequestBodyLimitLayer::new(max_body))
        // A whole request (body included) must finish in time: slow clients cannot hold
        // connections and tasks forever.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state_timeout,
        ));
    // Forward auth is the hot path (every sub-request of every page behind the proxy): its
    // routes sit at their full path, outside the nest (no URI rewrite per request) and
    // outside the timeout and body-limit layers (no timer per request): they read no body
    // and answer from memory (Basic credentials wait at most for the bounded hash queue).
    app.route(
        &format!("{prefix}{}", paths::FORWARD_AUTH),
        get(authz::forward_auth).head(authz::forward_auth),
    )
    .route(
        &format!("{prefix}{}", paths::AUTH_REQUEST),
        get(authz::auth_request).head(authz::auth_request),
    )
    .route(
        &format!("{prefix}{}", paths::VERIFY),
        any(authz::legacy_verify),
    )
    .with_state(state)
    .layer(SetResponseHeaderLayer::if_not_present(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let live = st.store.live_sessions(st.clock.now()).await.unwrap_or(0);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(live),
    )
        .into_response()
}

/// The separate metrics listener's router (`telemetry.metrics.address`).
pub fn metrics_router(state: AppState, path: &str) -> Router {
    let path = if path.is_empty() { "/metrics" } else { path };
    Router::new().route(path, get(metrics)).with_state(state)
}

/// `200 {"status":"OK"}` once the daemon serves (it is only routed after start-up) and its
/// state store answers; `503 {"status":"KO"}` while a shared store (Redis) is unreachable.
async fn health(State(st): State<AppState>) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    match st.store.ping().await {
        Ok(()) => (no_store, Json(json!({"status": "OK"}))).into_response(),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            no_store,
            Json(json!({"status": "KO", "message": "The state store is unreachable."})),
        )
            .into_response(),
    }
}
