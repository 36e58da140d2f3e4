//! Session cookies: finding the current session, issuing new ones, ending them.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use super::request::{cookies, new_session_id, session_key};
use crate::config::SessionConfig;
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Session, Store};
use crate::users::User;

/// A valid session and its (still active) user.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session: Arc<Session>,
    pub user: Arc<User>,
}

/// Whether `s` is still within its lifetimes at `now`.
pub fn session_alive(cfg: &SessionConfig, s: &Session, now: i64) -> bool {
    let lifetime = if s.remember_me {
        cfg.remember_me
    } else {
        cfg.expiration
    };
    if now - s.created > lifetime.as_secs() as i64 {
        return false;
    }
    // Remember-me sessions are not subject to inactivity (as in Authelia).
    s.remember_me || now - s.last_activity <= cfg.inactivity.as_secs() as i64
}

/// The session the request's cookie names, if it is valid for `cd`. A session whose user
/// was deleted, disabled or changed password is ended here.
pub async fn current_session(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
) -> Option<SessionUser> {
    let now = st.clock.now();
    for value in cookies(headers, &cd.cookie_name) {
        let Some(key) = session_key(value) else {
            continue;
        };
        let Ok(Some(session)) = st.store.session(&key).await else {
            continue;
        };
        // A cookie moved to another domain is not honoured.
        if session.cookie_domain != cd.domain {
            continue;
        }
        let users = st.users.snapshot();
        let user = users.active(&session.username).cloned();
        let valid_user = user
            .as_ref()
            .is_some_and(|u| u.pw_fingerprint == session.pw_fingerprint);
        if !session_alive(&st.config().session, &session, now) || !valid_user {
            let _ = st.store.delete_session(&key).await;
            continue;
        }
        if !session.remember_me && now > session.last_activity {
            let _ = st.store.touch_session(&session, now).await;
        }
        return user.map(|user| SessionUser { session, user });
    }
    None
}

/// Creates a session for `user` at `level` and returns the `Set-Cookie` value.
/// A fresh id every time: a session id never survives a login step (no fixation).
pub async fn start_session(
    st: &AppState,
    cd: &CookieDomain,
    user: &User,
    level: AuthLevel,
    remember_me: bool,
    amr: Vec<String>,
    previous: Option<&Session>,
) -> Result<HeaderValue, crate::store::StoreError> {
    let now = st.clock.now();
    if let Some(p) = previous {
        st.store.delete_session(&p.key).await?;
    }
    let id = new_session_id();
    let key = session_key(&id).ok_or(crate::store::StoreError::Unavailable)?;
    let session = Session {
        key,
        username: user.name.clone(),
        level,
        cookie_domain: cd.domain.clone(),
        created: previous.map_or(now, |p| p.created),
        last_activity: now,
        remember_me,
        auth_time: now,
        amr,
        pw_fingerprint: user.pw_fingerprint,
    };
    st.store.save_session(session).await?;
    let max_age = remember_me.then(|| st.config().session.remember_me.as_secs());
    Ok(set_cookie(cd, &id, max_age))
}

/// `Set-Cookie` for the session id (or, with an empty id and `Some(0)`, its removal).
pub fn set_cookie(cd: &CookieDomain, id: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!(
        "{}={id}; Domain={}; Path=/; HttpOnly; SameSite=Lax",
        cd.cookie_name, cd.domain
    );
    if cd.secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(cd: &CookieDomain) -> HeaderValue {
    set_cookie(cd, "", Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(remember_me: bool) -> Session {
        Session {
            key: [0; 32],
            username: "a".into(),
            level: AuthLevel::OneFactor,
            cookie_domain: "halos.local".into(),
            created: 1000,
            last_activity: 1000,
            remember_me,
            auth_time: 1000,
            amr: vec![],
            pw_fingerprint: 0,
        }
    }

    #[test]
    fn inactivity_expiration_and_remember_me() {
        let cfg = SessionConfig {
            inactivity: crate::duration::ConfigDuration::from_secs(300),
            expiration: crate::duration::ConfigDuration::from_secs(3600),
            remember_me: crate::duration::ConfigDuration::from_secs(86_400),
            ..SessionConfig::default()
        };
        let s = session(false);
        assert!(session_alive(&cfg, &s, 1000 + 300));
        assert!(!session_alive(&cfg, &s, 1000 + 301), "inactive too long");
        let active = Session {
            last_activity: 1000 + 3500,
            ..session(false)
        };
        assert!(
            !session_alive(&cfg, &active, 1000 + 3601),
            "expired although active"
        );
        let r = session(true);
        assert!(
            session_alive(&cfg, &r, 1000 + 80_000),
            "remember-me ignores inactivity"
        );
        assert!(!session_alive(&cfg, &r, 1000 + 86_401));
    }
}
