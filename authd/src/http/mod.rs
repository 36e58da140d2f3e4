//! HTTP surface (DESIGN §5): thin axum handlers over the domain core.
//!
//! Everything is mounted under the configured path prefix (`/sso` by default). Errors
//! from the layers below become responses in exactly one place, [`error::WebError`].

pub mod error;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::Config;
use crate::users::store::UsersStore;
use crate::users::verifier::PasswordVerifier;

/// Shared, cheaply cloneable state of the running daemon.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub users: UsersStore,
    pub verifier: PasswordVerifier,
}

/// Route paths, shared by the router and anything that advertises them.
pub mod paths {
    pub const HEALTH: &str = "/api/health";
}

pub fn router(state: AppState) -> Router {
    let prefix = state.config.path_prefix().to_string();
    let max_body = state.config.server.max_body_bytes;
    let api = Router::new()
        .route(paths::HEALTH, get(health).head(health))
        .with_state(state);
    let app = if prefix.is_empty() {
        api
    } else {
        Router::new().nest(&prefix, api)
    };
    app.layer(RequestBodyLimitLayer::new(max_body))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// `200 {"status":"OK"}` once the daemon serves (it is only routed after start-up).
async fn health(State(_): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(json!({"status": "OK"})),
    )
        .into_response()
}
