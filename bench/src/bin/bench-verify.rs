//! A minimal forward-auth verifier (the floor authd is compared with behind nginx):
//! `GET /verify` takes the `authd_session` cookie, base64url-decodes it to a 32-byte id,
//! looks it up among 10,000 in-memory sessions and answers `200` with the four identity
//! headers authd sends (`Remote-User`, `-Groups`, `-Name`, `-Email`), else `401` (no body
//! either way, like authd's answers to nginx). No rules, no expiry, no logging.
//!
//! Session `i` has the id `[i as u32 little-endian, 0, ...]`; `ready` is followed by the
//! cookie of session 0 so the benchmark can use it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Session {
    user: HeaderValue,
    groups: HeaderValue,
    name: HeaderValue,
    email: HeaderValue,
}

type Sessions = Arc<HashMap<[u8; 32], Session>>;

fn session_id(i: u32) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_le_bytes());
    id
}

async fn verify(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let found = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("authd_session="))
        .find_map(|value| {
            let mut id = [0u8; 32];
            match URL_SAFE_NO_PAD.decode_slice(value, &mut id) {
                Ok(32) => sessions.get(&id),
                _ => None,
            }
        });
    match found {
        Some(s) => (
            StatusCode::OK,
            [
                ("remote-user", s.user.clone()),
                ("remote-groups", s.groups.clone()),
                ("remote-name", s.name.clone()),
                ("remote-email", s.email.clone()),
            ],
        )
            .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

fn main() {
    let sessions: HashMap<[u8; 32], Session> = (0..10_000u32)
        .map(|i| {
            let s = Session {
                user: HeaderValue::from_str(&format!("user{i}")).expect("header value"),
                groups: HeaderValue::from_static("users,admins"),
                name: HeaderValue::from_str(&format!("User {i}")).expect("header value"),
                email: HeaderValue::from_str(&format!("user{i}@halos.test")).expect("header value"),
            };
            (session_id(i), s)
        })
        .collect();
    eprintln!(
        "cookie authd_session={}",
        URL_SAFE_NO_PAD.encode(session_id(0))
    );
    let app = Router::new()
        .route("/verify", get(verify))
        .with_state(Arc::new(sessions));
    halos_bench::serve(app);
}
