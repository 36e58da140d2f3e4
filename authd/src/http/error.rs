//! The one place where errors become HTTP responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::users::verifier::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("forbidden")]
    Forbidden,
    #[error("too many requests")]
    Busy,
    /// The state store (Redis) is unreachable; it logs that itself, rate-limited.
    #[error("state store unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<VerifyError> for WebError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Busy => WebError::Busy,
            VerifyError::Stopped => WebError::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // Redis down: a 503 the client may retry; the store logs it (rate-limited).
            crate::store::StoreError::Redis(_) | crate::store::StoreError::Unavailable => {
                WebError::Unavailable
            }
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "KO", "message": "Bad request."})),
            )
                .into_response(),
            WebError::AuthenticationFailed => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": "KO", "message": "Authentication failed. Check your credentials."})),
            )
                .into_response(),
            WebError::Forbidden => (
                StatusCode::FORBIDDEN,
                Json(json!({"status": "KO", "message": "Forbidden."})),
            )
                .into_response(),
            WebError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("2"))],
                Json(json!({"status": "KO", "message": "Too many login attempts in progress. Try again shortly."})),
            )
                .into_response(),
            WebError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
                Json(json!({"status": "KO", "message": "Temporarily unavailable. Try again shortly."})),
            )
                .into_response(),
            WebError::Internal(detail) => {
                // The detail goes to the log under an id; the client only sees the id.
                let mut id = [0u8; 4];
                crate::users::hash::random_bytes(&mut id);
                let id = hex::encode(id);
                tracing::error!(error_id = %id, %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"status": "KO", "message": format!("Internal error (id {id}).")})),
                )
                    .into_response()
            }
        }
    }
}
